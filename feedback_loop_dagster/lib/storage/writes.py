"""Dialect-aware bulk writes used by every stage (and by the benchmark's plain-copy baseline)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
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


def bulk_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    """Append a DataFrame whose columns are a subset of `table`'s, as fast as the driver allows.

    PostgreSQL gets COPY through psycopg 3 on the caller's connection (so it joins the caller's
    transaction); SQLite gets one executemany.
    """
    if frame.empty:
        return 0
    columns = list(frame.columns)
    if is_postgres(conn.engine):
        cursor = conn.connection.driver_connection.cursor()
        column_list = ", ".join(f'"{c}"' for c in columns)
        with cursor.copy(f'COPY "{table.name}" ({column_list}) FROM STDIN') as copy:
            for record in _records(frame):
                copy.write_row(record)
        return len(frame)
    conn.execute(table.insert(), [dict(zip(columns, r, strict=True)) for r in _records(frame)])
    return len(frame)


def _records(frame: pd.DataFrame) -> Iterable[tuple]:
    """Row tuples with every missing value as None, which both drivers write as NULL."""
    columns = []
    for name in frame.columns:
        series = frame[name]
        values = series.to_numpy(dtype=object)
        missing = series.isna().to_numpy()
        if missing.any():
            values = values.copy()
            values[missing] = None
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            values = np.array([None if v is None else v.to_pydatetime() for v in values], dtype=object)
        columns.append(values)
    return zip(*columns, strict=True)
