"""Reading a query's rows into DataFrames, in chunks, as fast as the driver allows.

`read_frames` yields, chunk by chunk, exactly the frame `pd.DataFrame.from_records(rows,
columns=..., coerce_float=False)` makes of the rows a plain fetch returns: raw driver values, no
SQLAlchemy result processing (so a malformed value in a loosely typed source reaches the caller
as a value, not an exception). SQLite, and a PostgreSQL query with a column of a type pg_copy
does not decode: that plain fetch. PostgreSQL otherwise: COPY ... TO STDOUT (FORMAT BINARY),
turned into the same frame column by column (pg_copy.py), several times cheaper than fetching
Python objects row by row.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.storage import pg_copy
from feedback_loop_dagster.lib.storage.database import is_postgres


def read_frames(conn: Connection, query: sa.Select, columns: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The rows of `query` (selecting `columns`, in order) as frames of at most `chunk_rows` rows."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    statement, params = str(compiled), compiled.construct_params()
    if not is_postgres(conn.engine):
        params = tuple(params[name] for name in (compiled.positiontup or ()))
    driver = conn.connection.driver_connection
    cursor = driver.cursor()  # plain tuples: no Row objects
    try:
        if is_postgres(conn.engine) and _binary_readable(cursor, driver, statement, params):
            oids = _oids(cursor)  # of the LIMIT 0 probe: the COPY replaces the description
            with cursor.copy(f"COPY ({statement}) TO STDOUT (FORMAT BINARY)", params) as copy:
                yield from pg_copy.binary_frames(copy, driver, list(columns), oids, chunk_rows)
            return
        yield from _fetched_frames(cursor, statement, params, list(columns), chunk_rows)
    finally:
        cursor.close()


def _fetched_frames(cursor, statement: str, params, columns: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    cursor.execute(statement, params)
    while rows := cursor.fetchmany(chunk_rows):
        yield pd.DataFrame.from_records(rows, columns=columns, coerce_float=False)


def _binary_readable(cursor, driver, statement: str, params) -> bool:
    """Whether COPY BINARY gives exactly what a fetch would: every column of a type pg_copy
    decodes, loaded by psycopg's own loader (none registered on this connection), text as str
    (not SQL_ASCII bytes), and a double's binary value the one its text form gives
    (extra_float_digits >= 1)."""
    import psycopg
    from psycopg import pq

    # The types a fetch would load (a view may differ from the contract), without reading rows.
    cursor.execute(f"SELECT * FROM ({statement}) AS q LIMIT 0", params)
    for d in cursor.description:
        loader = cursor.adapters.get_loader(d.type_code, pq.Format.TEXT)
        if d.type_code not in pg_copy.READABLE or loader is not psycopg.adapters.get_loader(d.type_code, pq.Format.TEXT):
            return False
        if d.type_code in (pg_copy.TEXT, pg_copy.VARCHAR, pg_copy.BPCHAR) and not isinstance(loader(d.type_code, driver).load(b"a"), str):
            return False
    if pg_copy.FLOAT8 in _oids(cursor):
        return int(driver.execute("SHOW extra_float_digits").fetchone()[0]) >= 1
    return True


def _oids(cursor) -> list[int]:
    return [d.type_code for d in cursor.description]
