"""Dialect-aware bulk writes used by every stage (and by the benchmark's plain-copy baseline)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from psycopg.copy import QueuedLibpqWriter
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.storage.database import is_postgres

# Rows formatted and handed to the driver at a time: bounds the memory of the formatted text,
# and lets PostgreSQL start ingesting a block while the next one is formatted.
WRITE_BLOCK_ROWS = 50_000

_PG_NULL = "\\N"
# COPY text format: a backslash, a tab, a newline and a carriage return must be escaped.
_PG_SPECIAL = ("\\", "\t", "\n", "\r")
_PG_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_UTC_NAMES = {"UTC", "Etc/UTC", "utc", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu"}


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


def bulk_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame | Iterable[pd.DataFrame]) -> int:
    """Append a DataFrame (or a stream of them) whose columns are a subset of `table`'s, as fast
    as the driver allows; returns the rows written.

    PostgreSQL gets COPY in text format on the caller's connection (so it joins the caller's
    transaction), the rows formatted column by column in large blocks; a stream of frames with
    the same columns shares one COPY, so the server ingests one frame while the caller prepares
    the next. SQLite gets one DB-API executemany per block, inside the caller's transaction, with
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
                open_copy.write(_PG_BINARY_TRAILER)
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
                column_types[name] = _pg_column_types(cursor, name)
            blocks, kind = _pg_binary_blocks(frame, column_types[name], encoding), "binary"
            if blocks is None:
                blocks, kind = _pg_text_blocks(table, frame, encoding), "text"
            if blocks is None:
                kind = "rows"
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
                    copy.write(_PG_BINARY_HEADER)
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


def _pg_column_types(cursor, table_name: str) -> dict[str, int]:
    cursor.execute(
        "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped",
        (table_name,),
    )
    return dict(cursor.fetchall())


# COPY binary format: a signature, flags and header extension length; each row a 16-bit field
# count, then each field's 32-bit length (-1 for NULL) and its bytes, big-endian; a -1 trailer.
_PG_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_PG_BINARY_TRAILER = b"\xff\xff"
_PG_EPOCH = np.datetime64("2000-01-01T00:00:00", "us")
_PG_INT_TYPES = {20: (">i8", -(2**63), 2**63 - 1), 23: (">i4", -(2**31), 2**31 - 1), 21: (">i2", -(2**15), 2**15 - 1)}
_FLOAT8, _TEXT, _VARCHAR, _DATE, _TIMESTAMP, _TIMESTAMPTZ = 701, 25, 1043, 1082, 1114, 1184


class _BinaryField:
    """One column's COPY binary encoding: per row the data length (-1 for NULL) and the bytes,
    either as an (n, width) array or as one buffer with offsets."""

    def __init__(self, lengths: np.ndarray, fixed: np.ndarray | None = None, data: np.ndarray | None = None):
        self.lengths = lengths  # int64, -1 for NULL
        self.fixed = fixed
        self.data = data
        if data is not None:
            self.offsets = np.concatenate(([0], np.cumsum(np.maximum(lengths, 0))))


def _pg_binary_blocks(frame: pd.DataFrame, column_types: dict[str, int], encoding: str) -> Iterator[bytes] | None:
    """COPY binary-format blocks of `frame`, or None when a column is not one of the
    (dtype, column type) pairs encoded here. The server stores exactly what the text form of
    the same values (what psycopg would send) gives it: the same integers, doubles, instants,
    days and strings."""
    fields = []
    for name in frame.columns:
        field = _pg_binary_field(frame[name], column_types.get(str(name)), encoding)
        if field is None:
            return None
        fields.append(field)
    return _binary_blocks(fields, len(frame))


def _pg_binary_field(series: pd.Series, type_oid: int | None, encoding: str) -> _BinaryField | None:
    dtype = series.dtype
    n = len(series)
    if type_oid is None:
        return None
    if dtype == object:
        values = series.to_numpy()
        missing = series.isna().to_numpy()
        if missing.all():
            return _BinaryField(np.full(n, -1, dtype=np.int64), fixed=np.zeros((n, 0), dtype=np.uint8))
        present = values[~missing] if missing.any() else values
        kinds = set(map(type, present))
        if kinds <= {str} and type_oid in (_TEXT, _VARCHAR):
            text = present.tolist()
            joined = "".join(text)
            if "\x00" in joined:
                return None  # let the server refuse it the usual way
            if joined.isascii():
                data = joined.encode("ascii")
                sizes = np.fromiter(map(len, text), dtype=np.int64, count=len(text))
            else:
                encoded = [t.encode(encoding) for t in text]
                data = b"".join(encoded)
                sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
            lengths = np.full(n, -1, dtype=np.int64)
            lengths[~missing] = sizes
            return _BinaryField(lengths, data=np.frombuffer(data, dtype=np.uint8))
        if kinds == {date} and type_oid == _DATE:
            codes, uniques = pd.factorize(present)
            days = np.zeros(n, dtype=np.int64)
            days[~missing] = np.array(list(uniques), dtype="datetime64[D]").astype(np.int64)[codes] - 10_957
            return _fixed(days, ">i4", missing)
        return None
    if dtype == np.int64 and type_oid in _PG_INT_TYPES:
        big_endian, low, high = _PG_INT_TYPES[type_oid]
        values = series.to_numpy()
        if len(values) and (values.min() < low or values.max() > high):
            return None  # out of range: let the server say so
        return _fixed(values, big_endian, None)
    if dtype == np.float64 and type_oid == _FLOAT8:
        values = series.to_numpy()
        return _fixed(values, ">f8", np.isnan(values))
    if isinstance(dtype, pd.DatetimeTZDtype) and type_oid == _TIMESTAMPTZ or (
        _is_naive_datetime(dtype) and type_oid == _TIMESTAMP
    ):
        # microseconds since 2000-01-01 (UTC for timestamptz, wall time for timestamp); the
        # nanoseconds dropped as Timestamp.to_pydatetime() drops them (floor)
        array = series.array
        missing = array.isna()
        micros = _microseconds(array) - _PG_EPOCH.astype(np.int64)
        return _fixed(micros, ">i8", missing)
    return None


def _fixed(values: np.ndarray, big_endian: str, missing: np.ndarray | None) -> _BinaryField:
    width = np.dtype(big_endian).itemsize
    fixed = values.astype(big_endian).view(np.uint8).reshape(len(values), width)
    lengths = np.full(len(values), width, dtype=np.int64)
    if missing is not None and missing.any():
        lengths[missing] = -1
    return _BinaryField(lengths, fixed=fixed)


def _binary_blocks(fields: list[_BinaryField], n: int) -> Iterator[bytes]:
    k = len(fields)
    count = np.array([k], dtype=">i2").view(np.uint8)
    for start in range(0, n, WRITE_BLOCK_ROWS):
        stop = min(start + WRITE_BLOCK_ROWS, n)
        rows = stop - start
        lengths = np.stack([f.lengths[start:stop] for f in fields], axis=1)  # (rows, k)
        sizes = np.maximum(lengths, 0)
        field_ends = np.cumsum(4 + sizes, axis=1)  # per row, relative to the first field
        row_sizes = 2 + field_ends[:, -1]
        row_starts = np.concatenate(([0], np.cumsum(row_sizes)[:-1]))
        out = np.empty(int(row_sizes.sum()), dtype=np.uint8)
        out[row_starts[:, None] + np.arange(2)] = count
        field_starts = row_starts[:, None] + 2 + field_ends - (4 + sizes)  # where each length goes
        for j, field in enumerate(fields):
            at = field_starts[:, j]
            out[at[:, None] + np.arange(4)] = lengths[:, j].astype(">i4").view(np.uint8).reshape(rows, 4)
            present = lengths[:, j] >= 0
            if field.fixed is not None:
                width = field.fixed.shape[1]
                if width:
                    out[(at[present] + 4)[:, None] + np.arange(width)] = field.fixed[start:stop][present]
            else:
                first, last = field.offsets[start], field.offsets[stop]
                if last > first:
                    local = field.offsets[start:stop] - first
                    at_data = at + 4 - local
                    out[np.repeat(at_data[present], sizes[present, j]) + np.arange(last - first)] = field.data[first:last]
        yield out.tobytes()


def _pg_text_blocks(table: sa.Table, frame: pd.DataFrame, encoding: str) -> Iterator[bytes] | None:
    """COPY text-format blocks of `frame`, or None when a column needs psycopg's own adaptation."""
    columns = []
    for name in frame.columns:
        formatted = _pg_text_column(frame[name], table.c[name].type if name in table.c else None)
        if formatted is None:
            return None
        columns.append(formatted)
    return _join_blocks(columns, len(frame), encoding)


def _join_blocks(columns: list[list[str]], n: int, encoding: str) -> Iterator[bytes]:
    for start in range(0, n, WRITE_BLOCK_ROWS):
        stop = min(start + WRITE_BLOCK_ROWS, n)
        rows = map("\t".join, zip(*(c[start:stop] for c in columns)))
        yield ("\n".join(rows) + "\n").encode(encoding)


def _pg_text_column(series: pd.Series, column_type: sa.types.TypeEngine | None) -> list[str] | None:
    """One column in COPY text format (the same values psycopg would send), or None if unknown."""
    dtype = series.dtype
    if dtype == np.int64:
        return list(map(str, series.to_numpy().tolist()))
    if dtype == np.float64:
        values = series.to_numpy()
        missing = np.isnan(values)
        if isinstance(column_type, sa.Integer):
            # (integers with a NULL, as pandas holds them) what a plain insert's cast makes of the
            # doubles: the nearest integer, half to even (COPY would refuse "1.0")
            present = values[~missing]
            if not ((present >= -(2.0**63)) & (present < 2.0**63)).all():
                return None  # infinite or out of range: let the server say so
            integers = np.rint(np.where(missing, 0, values)).astype(np.int64)
            return _with_nulls(list(map(str, integers.tolist())), missing)
        text = list(map(repr, values.tolist()))  # shortest repr: PostgreSQL reads the same double
        return _with_nulls(text, missing)
    if isinstance(dtype, pd.DatetimeTZDtype) or _is_naive_datetime(dtype):
        array = series.array
        if getattr(dtype, "tz", None) is not None:
            aware_column = isinstance(column_type, sa.DateTime) and column_type.timezone
            if not aware_column and str(dtype.tz) not in _UTC_NAMES:
                return None  # the wall time psycopg would send depends on the zone: let it decide
            text = _iso_microseconds(array.tz_convert(UTC), "T")
            return _with_nulls([t + "+00" for t in text], array.isna())
        return _with_nulls(_iso_microseconds(array, "T"), array.isna())
    if dtype == object:
        values = series.to_numpy()
        missing = series.isna().to_numpy()
        present = values[~missing] if missing.any() else values
        kinds = set(map(type, present))
        if kinds <= {str}:
            text = present.tolist()
            if any(ch in "".join(text) for ch in _PG_SPECIAL):
                text = [t.translate(_PG_ESCAPES) for t in text]
        elif kinds == {date}:
            text = [d.isoformat() for d in present]
        else:
            return None
        if not missing.any():
            return text
        out = np.full(len(values), _PG_NULL, dtype=object)
        out[~missing] = text
        return out.tolist()
    return None


def _with_nulls(text: list[str], missing: np.ndarray) -> list[str]:
    if not missing.any():
        return text
    out = np.array(text, dtype=object)
    out[missing] = _PG_NULL
    return out.tolist()


def _iso_microseconds(array, separator: str) -> list[str]:
    """'YYYY-MM-DD<sep>HH:MM:SS.ffffff' of a naive (wall-time) DatetimeArray; NaT entries are junk.

    Nanoseconds are dropped (floor), as `Timestamp.to_pydatetime()` drops them.
    """
    text = np.datetime_as_string(_microseconds(array).view("datetime64[us]"), unit="us")
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
    if isinstance(impl, sa.DateTime) and (isinstance(dtype, pd.DatetimeTZDtype) or _is_naive_datetime(dtype)):
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


def _is_naive_datetime(dtype) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind == "M"


_PER_MICROSECOND = {"ns": (1000, 1), "us": (1, 1), "ms": (1, 1000), "s": (1, 1_000_000)}


def _microseconds(array) -> np.ndarray:
    """Microseconds since 1970 of a DatetimeArray of any unit (UTC for a zoned one); below a
    microsecond dropped (floor), as `to_pydatetime()` drops it. NaT entries are junk."""
    divide, multiply = _PER_MICROSECOND[array.unit]
    values = array.asi8
    return values // divide if divide != 1 else values * multiply


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
