"""Reading a query's rows into DataFrames, in chunks, as fast as the driver allows.

`read_frames` yields, chunk by chunk, exactly the frame `pd.DataFrame.from_records(rows,
columns=..., coerce_float=False)` makes of the rows a plain fetch returns: raw driver values, no
SQLAlchemy result processing (so a malformed value in a loosely typed source reaches the caller
as a value, not an exception). SQLite: a DB-API cursor's plain tuples. PostgreSQL: COPY ... TO
STDOUT, turned into the same frame column by column, several times cheaper than fetching
Python objects row by row.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterator

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.storage.database import StorageError, is_postgres


def read_frames(conn: Connection, query: sa.Select, columns: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The rows of `query` (selecting `columns`, in order) as frames of at most `chunk_rows` rows."""
    if is_postgres(conn.engine):
        yield from _read_copy_frames(conn, query, list(columns), chunk_rows)
        return
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    cursor = conn.connection.driver_connection.cursor()  # plain tuples: no Row objects
    try:
        cursor.execute(str(compiled), tuple(params[name] for name in (compiled.positiontup or ())))
        while rows := cursor.fetchmany(chunk_rows):
            yield pd.DataFrame.from_records(rows, columns=list(columns), coerce_float=False)
    finally:
        cursor.close()


# --- PostgreSQL: COPY instead of a row-by-row fetch ------------------------------------------
#
# A fetch builds 16 Python objects per row (tz-aware datetimes are the dearest) and
# `from_records` then converts them back into arrays. COPY ... TO STDOUT sends the same rows in
# one stream, and each column becomes, vectorised, the array `from_records` would have made of
# psycopg's values: int64 (float64 when a NULL is present), float64, str/None,
# datetime64[ns, <session zone>] (datetime64[ns] without a zone), and a column of None when every
# value is NULL.
#
# Binary COPY when every column is an integer, a double, text or a timestamp (the contract's
# types): fixed-width values are read straight from the buffer, strings are sliced from it.
# Otherwise text COPY, split by pandas' C parser; there a column of any other type, or a value
# the vectorised conversion cannot take (a timestamp outside pandas' range, an offset with
# seconds), goes through psycopg's own loader and `from_records`. Either way the frame is the
# one the row-by-row fetch produced (a double's binary value is the one its text form, with
# extra_float_digits >= 1, round-trips to; with fewer digits text COPY is used).

_COPY_KINDS = {20: "int", 21: "int", 23: "int", 700: "float", 701: "float", 25: "text", 1043: "text",
               1042: "text", 1184: "timestamptz", 1114: "timestamp"}  # type OID -> fast conversion
_COPY_UNESCAPE = re.compile(r"\\(.)")
_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _read_copy_frames(conn, query: sa.Select, columns: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    import psycopg
    from psycopg import pq

    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    statement, params = str(compiled), compiled.construct_params()
    driver = conn.connection.driver_connection
    cursor = driver.cursor()
    # The types a fetch would load (a view may differ from the contract), without reading rows.
    cursor.execute(f"SELECT * FROM ({statement}) AS q LIMIT 0", params)
    loaders = [
        cursor.adapters.get_loader(d.type_code, pq.Format.TEXT)(d.type_code, driver) for d in cursor.description
    ]
    kinds = []
    for d, loader in zip(cursor.description, loaders, strict=True):
        kind = _COPY_KINDS.get(d.type_code, "other")
        if type(loader) is not psycopg.adapters.get_loader(d.type_code, pq.Format.TEXT):
            kind = "other"  # a loader registered on this connection decides the values
        elif kind == "text" and not isinstance(loader.load(b"a"), str):
            kind = "other"  # SQL_ASCII: psycopg returns bytes
        kinds.append(kind)
    encoding = driver.info.encoding
    zone = driver.info.timezone
    oids = [d.type_code for d in cursor.description]
    if all(kind != "other" and oid in _BINARY_WIDTHS for kind, oid in zip(kinds, oids, strict=True)) and (
        701 not in oids or int(driver.execute("SHOW extra_float_digits").fetchone()[0]) >= 1
    ):
        with cursor.copy(f"COPY ({statement}) TO STDOUT (FORMAT BINARY)", params) as copy:
            yield from _binary_frames(copy, driver, columns, oids, chunk_rows)
        return
    with cursor.copy(f"COPY ({statement}) TO STDOUT", params) as copy:
        buffer, count = bytearray(), 0
        for data in copy:
            buffer += data
            count += 1
            if count == chunk_rows:
                yield _copy_frame(bytes(buffer), count, columns, kinds, loaders, encoding, zone)
                buffer, count = bytearray(), 0
        if count:
            yield _copy_frame(bytes(buffer), count, columns, kinds, loaders, encoding, zone)


# Width of a value in the binary format (0: variable, text) per type OID.
_BINARY_WIDTHS = {20: 8, 21: 2, 23: 4, 701: 8, 25: 0, 1043: 0, 1042: 0, 1184: 8, 1114: 8}
_BINARY_TYPES = {20: ">i8", 21: ">i2", 23: ">i4", 701: ">f8", 1184: ">i8", 1114: ">i8"}
_BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
_NS_LIMIT_US = (np.iinfo(np.int64).max // 1000) - 1  # datetime64[ns] holds +-292 years around 1970


def _binary_frames(copy, driver, columns, oids, chunk_rows) -> Iterator[pd.DataFrame]:
    messages = _copy_messages(copy, driver)
    first = next(messages, None)
    if first is None or bytes(first[:11]) != _BINARY_SIGNATURE:
        raise StorageError("COPY BINARY did not start with its signature")
    first = first[19 + int.from_bytes(first[15:19], "big") :]
    # Rows are appended to one buffer as they come (holding 200,000 small objects would cost
    # more than copying their bytes).
    buffer, sizes = bytearray(), []
    for message in itertools.chain([first], messages):
        size = len(message)
        if size <= 2:  # the trailer (a row is longer); read on so the COPY completes
            continue
        buffer += message
        sizes.append(size)
        if len(sizes) == chunk_rows:
            yield _binary_frame(bytes(buffer), sizes, columns, oids, driver)
            buffer, sizes = bytearray(), []
    if sizes:
        yield _binary_frame(bytes(buffer), sizes, columns, oids, driver)


def _copy_messages(copy, driver) -> Iterator[memoryview]:
    """The CopyData messages (one per row), taken straight from libpq while they are buffered;
    psycopg waits for the socket when they are not, and reads the final result."""
    from psycopg import errors, generators, pq

    pgconn = driver.pgconn
    get = pgconn.get_copy_data
    while True:
        nbytes, data = get(1)
        while nbytes > 0:
            yield data
            nbytes, data = get(1)
        if nbytes == 0:
            data = copy.read()
            if not data:
                return
            yield data
        else:  # the end of the data was already buffered: read the command's result
            (result, *more) = driver.wait(generators.fetch_many(pgconn))
            if result.status != pq.ExecStatus.COMMAND_OK or more:
                raise errors.error_from_result(result, encoding=driver.info.encoding)
            return


def _be(array: np.ndarray, at: np.ndarray, big_endian: str) -> np.ndarray:
    width = np.dtype(big_endian).itemsize
    return array[at[:, None] + np.arange(width)].view(big_endian).ravel()


def _binary_frame(data: bytes, sizes: list[int], columns, oids, driver) -> pd.DataFrame:
    encoding, zone = driver.info.encoding, driver.info.timezone
    sizes = np.asarray(sizes, dtype=np.int64)
    array = np.frombuffer(data, dtype=np.uint8)
    ends = np.cumsum(sizes)
    position = ends - sizes
    if not (_be(array, position, ">i2") == len(columns)).all():
        raise StorageError("COPY BINARY: unexpected field count")
    position = position + 2
    starts, lengths = [], []
    for _ in columns:
        length = _be(array, position, ">i4").astype(np.int64)
        starts.append(position + 4)
        lengths.append(length)
        position = position + 4 + np.maximum(length, 0)
    if not (position == ends).all():
        raise StorageError("COPY BINARY: a row does not end where its message does")
    text = None
    frame = {}
    for name, oid, start, length in zip(columns, oids, starts, lengths, strict=True):
        missing = length < 0
        if missing.all():
            frame[name] = np.full(len(sizes), None, dtype=object)
            continue
        width = _BINARY_WIDTHS[oid]
        present = ~missing
        if width == 0:
            if text is None:
                text = data.decode("latin-1")  # one character per byte: ASCII values slice as is
            frame[name] = _binary_text(data, text, array, start, length, present, encoding)
            continue
        if not (length[present] == width).all():
            raise StorageError(f"COPY BINARY: unexpected width in column {name!r}")
        values = _be(array, start[present], _BINARY_TYPES[oid]).astype(np.int64 if oid != 701 else np.float64)
        if oid in (1184, 1114):
            column = _binary_timestamps(values, present, oid, zone)
            if column is None:  # infinity or outside datetime64[ns]: psycopg and pandas decide
                column = _loaded_column(name, oid, data, start, length, driver)
            frame[name] = column
        elif oid != 701 and not missing.any():
            frame[name] = values
        else:
            out = np.full(len(sizes), np.nan)
            out[present] = values
            frame[name] = out
    return pd.DataFrame(frame)


def _binary_text(data: bytes, text: str, array: np.ndarray, start, length, present, encoding) -> np.ndarray:
    out = np.full(len(start), None, dtype=object)
    starts, stops = start[present], start[present] + length[present]
    values = [text[a:b] for a, b in zip(starts.tolist(), stops.tolist(), strict=True)]
    # Values with a byte >= 0x80 are decoded properly (found without looking at each value).
    nonempty = stops > starts
    if nonempty.any():
        bounds = np.stack([starts[nonempty], stops[nonempty]], axis=1).ravel()
        if bounds[-1] == len(array):
            bounds = bounds[:-1]
        high = np.maximum.reduceat(array, bounds)[::2] >= 0x80
        for i in np.flatnonzero(nonempty)[high].tolist():
            values[i] = data[starts[i] : stops[i]].decode(encoding)
    out[present] = values
    return out


def _binary_timestamps(micros: np.ndarray, present: np.ndarray, oid: int, zone):
    if len(micros) and ((micros < -_NS_LIMIT_US - _PG_EPOCH_US) | (micros > _NS_LIMIT_US - _PG_EPOCH_US)).any():
        return None
    micros = micros + _PG_EPOCH_US
    ns = np.full(len(present), np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    ns[present] = micros * 1000
    index = pd.DatetimeIndex(ns.view("datetime64[ns]"))
    return index.tz_localize("UTC").tz_convert(zone).array if oid == 1184 else index.array


def _loaded_column(name, oid, data: bytes, start, length, driver):
    """A column through psycopg's binary loader and `from_records`, as a fetch would make it."""
    from psycopg import pq

    loader = driver.adapters.get_loader(oid, pq.Format.BINARY)(oid, driver)
    values = [
        None if n < 0 else loader.load(data[a : a + n]) for a, n in zip(start.tolist(), length.tolist(), strict=True)
    ]
    return pd.DataFrame.from_records([(v,) for v in values], columns=[name], coerce_float=False)[name].array


def _copy_frame(data: bytes, count: int, columns, kinds, loaders, encoding: str, zone) -> pd.DataFrame:
    text = pd.read_csv(
        io.BytesIO(data), sep="\t", header=None, names=range(len(columns)), dtype=object, engine="c",
        quoting=csv.QUOTE_NONE, na_values=["\\N"], keep_default_na=False, skip_blank_lines=False,
        encoding=encoding,
    )
    if len(text) != count:
        raise StorageError(f"COPY returned {count} rows but {len(text)} were parsed")
    frame = {}
    for i, (name, kind, loader) in enumerate(zip(columns, kinds, loaders, strict=True)):
        values = text[i].to_numpy()
        missing = text[i].isna().to_numpy()
        if missing.any():
            values = values.copy()
            values[missing] = None
        if "\\" in "".join(values[~missing] if missing.any() else values):
            # on the rare chunk with a backslash-escaped value only
            values = np.array(
                [v if v is None else _COPY_UNESCAPE.sub(lambda m: _COPY_ESCAPES.get(m[1], m[1]), v) for v in values],
                dtype=object,
            )
        frame[name] = _copy_column(name, values, missing, kind, loader, encoding, zone)
    return pd.DataFrame(frame)


def _copy_column(name, values: np.ndarray, missing: np.ndarray, kind: str, loader, encoding: str, zone):
    """The column `from_records` makes of psycopg's values for this text (see above)."""
    if missing.all():
        return np.full(len(values), None, dtype=object)
    present = values[~missing]
    if kind == "text":
        return values
    if kind == "int":
        ints = present.astype(np.int64)
        if not missing.any():
            return ints
        out = np.full(len(values), np.nan)
        out[~missing] = ints
        return out
    if kind == "float":
        out = np.full(len(values), np.nan)
        out[~missing] = present.astype(np.float64)
        return out
    if kind in ("timestamptz", "timestamp"):
        parsed = pd.to_datetime(values, format="ISO8601", utc=kind == "timestamptz", errors="coerce")
        if not parsed.isna()[~missing].any():
            parsed = pd.DatetimeIndex(parsed).as_unit("ns")
            return parsed.tz_convert(zone).array if kind == "timestamptz" else parsed.array
    # Anything else: psycopg's loader, value by value, then pandas' inference, as a fetch would.
    loaded = [None if v is None else loader.load(v.encode(encoding)) for v in values]
    return pd.DataFrame.from_records([(v,) for v in loaded], columns=[name], coerce_float=False)[name].array
