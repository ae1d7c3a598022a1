"""Replacing the rows of a set of (pattern_key, window_start) partitions in one statement."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def delete_partition_rows(conn: Connection, table: sa.Table, pairs: Sequence[tuple[str, date]]) -> None:
    """DELETE the rows of every (pattern_key, window_start) pair, as one executemany."""
    if pairs:
        conn.execute(
            table.delete().where(table.c.pattern_key == sa.bindparam("k"), table.c.window_start == sa.bindparam("w")),
            [{"k": key, "w": window} for key, window in pairs],
        )
