"""Dialect-aware bulk writes used by every stage (and by the benchmark's plain-copy baseline).

PostgreSQL: COPY on the caller's connection, in the binary format pg_copy.py encodes when every
column is one of its (dtype, column type) pairs, else psycopg's own `write_row`. SQLite: one
DB-API executemany per block, the values in the form SQLAlchemy's types would bind them (JSON
documents included: a frame carries them as text, encoded by the column type's `dumps`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

import numpy as np
import pandas as pd
import sqlalchemy as sa
from psycopg.copy import QueuedLibpqWriter
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.storage import pg_copy
from feedback_loop_dagster.lib.storage.database import is_postgres
from feedback_loop_dagster.lib.storage.json_text import JSONText

# Rows formatted and handed to the driver at a time: bounds the memory of the formatted text,
# and lets PostgreSQL start ingesting a block while the next one is formatted.
WRITE_BLOCK_ROWS = 50_000


def bulk_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame | Iterable[pd.DataFrame]) -> int:
    """Append a DataFrame (or a stream of them) whose columns are a subset of `table`'s, as fast
    as the driver allows; returns the rows written.

    PostgreSQL gets COPY on the caller's connection (so it joins the caller's transaction), in
    binary blocks formatted column by column where pg_copy can, else row by row by psycopg; a
    stream of frames with the same columns shares one COPY, so the server ingests one frame
    while the caller prepares the next. SQLite gets one DB-API executemany per block, inside the caller's transaction, with
    values already in the form SQLAlchemy's types would bind them.
    """
    frames = [frame] if isinstance(frame, pd.DataFrame) else frame
    return bulk_insert_batches(conn, ((table, f) for f in frames))


def bulk_insert_batches(conn: Connection, batches: Iterable[tuple[sa.Table, pd.DataFrame]]) -> int:
    """`bulk_insert` for a stream of (table, frame) pairs, written in order; consecutive frames
    for the same table and columns share one COPY on PostgreSQL. Returns the rows written."""
    if not conn.in_transaction():
        conn.begin()  # what conn.execute would do (autobegin): the caller commits
    if is_postgres(conn.engine):
        return _pg_copy_batches(conn, batches)
    written = 0
    for table, frame in batches:
        if not frame.empty:
            written += _sqlite_insert(conn, table, frame)
    return written


# --- PostgreSQL ---------------------------------------------------------------------------


def _pg_copy_batches(conn: Connection, batches: Iterable[tuple[sa.Table, pd.DataFrame]]) -> int:
    driver = conn.connection.driver_connection
    cursor = driver.cursor()
    encoding = driver.info.encoding
    preparer = conn.dialect.identifier_preparer
    column_types: dict[str, dict[str, int]] = {}
    written = 0
    copy_cm = copy = target = None
    statement = ""

    def finish(exc: BaseException | None = None) -> None:
        nonlocal copy_cm, copy, target
        if copy_cm is not None:
            cm, open_copy, binary = copy_cm, copy, target[2] == "binary"
            copy_cm, copy, target = None, None, None
            if binary and exc is None:
                open_copy.write(pg_copy.TRAILER)
            cm.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)

    try:
        for table, frame in batches:
            if frame.empty:
                continue
            columns = [str(c) for c in frame.columns]
            name = preparer.format_table(table)
            if name not in column_types:
                if copy_cm is not None:
                    finish()  # the catalog cannot be read while a COPY is under way
                column_types[name] = pg_copy.column_type_oids(cursor, name)
            blocks = pg_copy.binary_blocks(frame, column_types[name], encoding, WRITE_BLOCK_ROWS)
            kind = "binary" if blocks is not None else "rows"
            if target != (name, tuple(columns), kind):
                finish()
                column_list = ", ".join(preparer.quote(c) for c in columns)
                options = " (FORMAT BINARY)" if kind == "binary" else ""
                # A writer thread feeds the server, so the caller prepares the next frame while
                # the server ingests this one (a block is far larger than the socket's buffer).
                statement = f"COPY {name} ({column_list}) FROM STDIN{options}"
                copy_cm = cursor.copy(statement, writer=QueuedLibpqWriter(cursor))
                copy = copy_cm.__enter__()
                target = (name, tuple(columns), kind)
                if kind == "binary":
                    copy.write(pg_copy.HEADER)
            if kind == "rows":
                # A column no fast formatter knows: psycopg adapts each value itself. Its rows
                # are buffered, so end this COPY before any block is written after them.
                for record in _pg_records(table, frame):
                    copy.write_row(record)
                finish()
            else:
                for block in blocks:
                    copy.write(block)
            written += len(frame)
        finish()  # the server's verdict on the last COPY (a duplicate key, ...) arrives here
    except BaseException as exc:
        finish(exc)
        dbapi_error = conn.dialect.loaded_dbapi.Error
        if isinstance(exc, dbapi_error):
            # the exception SQLAlchemy would have raised (sa.exc.IntegrityError, ...)
            raise sa.exc.DBAPIError.instance(statement, None, exc, dbapi_error, dialect=conn.dialect) from exc
        raise
    return written


def _pg_records(table: sa.Table, frame: pd.DataFrame) -> Iterable[Sequence]:
    """`_records`, with a finite double bound for an integer column rounded (half to even) as a
    plain insert's cast rounds it: COPY refuses "1.0" for an integer."""
    integers = [i for i, c in enumerate(frame.columns) if c in table.c and isinstance(table.c[c].type, sa.Integer)]
    for record in _records(frame):
        if integers:
            record = list(record)
            for i in integers:
                if isinstance(record[i], float) and np.isfinite(record[i]):
                    record[i] = round(record[i])
        yield record


def _iso_microseconds(array, separator: str) -> list[str]:
    """'YYYY-MM-DD<sep>HH:MM:SS.ffffff' of a naive (wall-time) DatetimeArray; NaT entries are junk.

    Nanoseconds are dropped (floor), as `Timestamp.to_pydatetime()` drops them.
    """
    text = np.datetime_as_string(pg_copy.microseconds(array).view("datetime64[us]"), unit="us")
    if separator != "T":
        chars = text.view(np.uint32).reshape(len(text), -1)
        chars[:, 10] = ord(separator)
    return text.tolist()


# --- SQLite -------------------------------------------------------------------------------


def _sqlite_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    columns = [str(c) for c in frame.columns]
    missing_defaults = [
        c for c in table.columns if c.name not in columns and (c.default is not None or c.onupdate is not None)
    ]
    if missing_defaults:
        # Python-side defaults are SQLAlchemy's job.
        conn.execute(table.insert(), [dict(zip(columns, r, strict=True)) for r in _records(frame)])
        return len(frame)
    preparer = conn.dialect.identifier_preparer
    statement = (
        f"INSERT INTO {preparer.format_table(table)} ({', '.join(preparer.quote(c) for c in columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})"
    )
    values = [_sqlite_column(frame[c], table.c[c].type, conn.dialect) for c in columns]
    driver = conn.connection.driver_connection
    dbapi_error = conn.dialect.loaded_dbapi.Error
    for start in range(0, len(frame), WRITE_BLOCK_ROWS):
        stop = start + WRITE_BLOCK_ROWS
        try:
            driver.executemany(statement, zip(*(v[start:stop] for v in values)))
        except dbapi_error as exc:
            # the exception SQLAlchemy would have raised (sa.exc.IntegrityError, ...)
            raise sa.exc.DBAPIError.instance(statement, None, exc, dbapi_error, dialect=conn.dialect) from exc
    return len(frame)


def _sqlite_column(series: pd.Series, column_type: sa.types.TypeEngine, dialect) -> list:
    """The values SQLAlchemy would hand to sqlite3 for this column: missing values as None, and
    each value through the type's bind processor (DATETIME and DATE are formatted vectorised in
    the storage format of SQLAlchemy's SQLite types)."""
    dtype = series.dtype
    impl = column_type.dialect_impl(dialect)
    if isinstance(impl, sa.DateTime) and (isinstance(dtype, pd.DatetimeTZDtype) or pg_copy.is_naive_datetime(dtype)):
        array = series.array
        if getattr(dtype, "tz", None) is not None:
            array = array.tz_localize(None)  # SQLAlchemy stores the wall time and drops the zone
        text = _iso_microseconds(array, " ")
        return _none_where(text, array.isna())
    if isinstance(impl, sa.Date) and not isinstance(impl, sa.DateTime) and dtype == object:
        values = series.to_numpy()
        missing = series.isna().to_numpy()
        present = values[~missing] if missing.any() else values
        if set(map(type, present)) <= {date}:
            text = [d.isoformat() for d in present]
            if not missing.any():
                return text
            out = np.full(len(values), None, dtype=object)
            out[~missing] = text
            return out.tolist()
    values = _column_values(series)
    if isinstance(column_type, JSONText):
        return values.tolist()  # a frame carries JSON documents as text, which COPY writes as is
    processor = impl.bind_processor(dialect)
    if processor is not None and not (isinstance(impl, sa.Float) and dtype == np.float64):
        # (to_float of a float is the float itself)
        return [None if v is None else processor(v) for v in values]
    return values.tolist()


def _none_where(values: list, missing: np.ndarray) -> list:
    if not missing.any():
        return values
    out = np.array(values, dtype=object)
    out[missing] = None
    return out.tolist()


# --- Shared -------------------------------------------------------------------------------


def _column_values(series: pd.Series) -> np.ndarray:
    """A column as Python objects with every missing value as None (datetimes as datetime)."""
    missing = series.isna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        values = series.array.to_pydatetime()  # vectorised; nanoseconds dropped like to_pydatetime()
        values = values.astype(object) if values.dtype != object else values
    else:
        values = series.to_numpy(dtype=object)
    if missing.any():
        values = values.copy()
        values[missing] = None
    return values


def _records(frame: pd.DataFrame) -> Iterable[tuple]:
    """Row tuples with every missing value as None, which both drivers write as NULL."""
    return zip(*(_column_values(frame[name]) for name in frame.columns), strict=True)
