"""Row upserts (INSERT ... ON CONFLICT) in either dialect, for the registry, the partition status and
the other small tables.

Kept apart from writes.py, whose bulk frame writes need pandas, numpy and psycopg: reading or editing
the registry (what most CLI commands do) imports none of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.storage.database import is_postgres


def upsert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    key_columns: Sequence[str],
    update: bool = True,
) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE (or DO NOTHING when `update` is false)."""
    if not rows:
        return
    insert = (postgresql.insert if is_postgres(conn.engine) else sqlite.insert)(table)
    if update:
        changed = {c: insert.excluded[c] for c in rows[0] if c not in key_columns}
        statement = insert.on_conflict_do_update(index_elements=list(key_columns), set_=changed)
    else:
        statement = insert.on_conflict_do_nothing(index_elements=list(key_columns))
    conn.execute(statement, list(rows))
