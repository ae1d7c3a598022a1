"""PostgreSQL's COPY BINARY format, both ways, for pandas frames (used by writes.py and reads.py).

Writing: each column of a frame becomes its binary field (a signature, flags and header
extension length; then per row a 16-bit field count and per field a 32-bit length, -1 for NULL,
and the bytes, big-endian; a -1 trailer), vectorised with numpy, for the (dtype, column type)
pairs below; a frame with any other pair is left to psycopg (`copy.write_row`). The server
stores exactly what the text form of the same values (what psycopg would send) gives it.

Reading: `COPY (query) TO STDOUT (FORMAT BINARY)` turned, column by column, into the frame that
`pd.DataFrame.from_records(rows, coerce_float=False)` makes of a plain fetch of the same rows;
a query with a type not listed here is read by a plain fetch instead (reads.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date

import numpy as np
import pandas as pd

from feedback_loop_dagster.lib.storage.database import StorageError

# Type OIDs, and the big-endian layout of the fixed-width ones (text types: variable width).
INT8, INT2, INT4, TEXT, FLOAT8, BPCHAR, VARCHAR, DATE, TIMESTAMP, TIMESTAMPTZ = (
    20, 21, 23, 25, 701, 1042, 1043, 1082, 1114, 1184,
)
_FIXED = {INT8: ">i8", INT2: ">i2", INT4: ">i4", FLOAT8: ">f8", DATE: ">i4", TIMESTAMP: ">i8", TIMESTAMPTZ: ">i8"}
READABLE = frozenset(_FIXED) | {TEXT, VARCHAR, BPCHAR}  # what binary_frames decodes

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + bytes(8)  # flags, header extension length
TRAILER = b"\xff\xff"
EPOCH_US = 946_684_800_000_000  # PostgreSQL's epoch, 2000-01-01, in microseconds since 1970-01-01
_EPOCH_DAYS = 10_957  # the same, in days
# the days since 1970 datetime.date can hold (years 1 to 9999)
_FIRST_DAY, _LAST_DAY = (np.datetime64(d, "D").astype(np.int64) for d in ("0001-01-01", "9999-12-31"))
_NS_LIMIT_US = (np.iinfo(np.int64).max // 1000) - 1  # datetime64[ns] holds +-292 years around 1970


# --- writing ---------------------------------------------------------------------------------


def column_type_oids(cursor, table_name: str) -> dict[str, int]:
    cursor.execute(
        "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped",
        (table_name,),
    )
    return dict(cursor.fetchall())


class _BinaryField:
    """One column's COPY binary encoding: per row the data length (-1 for NULL) and the bytes,
    either as an (n, width) array or as one buffer with offsets."""

    def __init__(self, lengths: np.ndarray, fixed: np.ndarray | None = None, data: np.ndarray | None = None):
        self.lengths = lengths  # int64, -1 for NULL
        self.fixed = fixed
        self.data = data
        if data is not None:
            self.offsets = np.concatenate(([0], np.cumsum(np.maximum(lengths, 0))))


def binary_blocks(
    frame: pd.DataFrame, column_types: dict[str, int], encoding: str, block_rows: int
) -> Iterator[bytes] | None:
    """COPY binary-format blocks of `frame`, or None when a column is not one of the
    (dtype, column type) pairs encoded here. The server stores exactly what the text form of
    the same values (what psycopg would send) gives it: the same integers, doubles, instants,
    days and strings."""
    fields = []
    for name in frame.columns:
        field = _binary_field(frame[name], column_types.get(str(name)), encoding)
        if field is None:
            return None
        fields.append(field)
    return _binary_blocks(fields, len(frame), block_rows)


def _binary_field(series: pd.Series, type_oid: int | None, encoding: str) -> _BinaryField | None:
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
        if kinds <= {str} and type_oid in (TEXT, VARCHAR):
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
        if kinds == {date} and type_oid == DATE:
            codes, uniques = pd.factorize(present)
            days = np.zeros(n, dtype=np.int64)
            days[~missing] = np.array(list(uniques), dtype="datetime64[D]").astype(np.int64)[codes] - _EPOCH_DAYS
            return _fixed(days, ">i4", missing)
        return None
    if dtype == np.int64 and type_oid in (INT2, INT4, INT8):
        big_endian = _FIXED[type_oid]
        low, high = np.iinfo(np.dtype(big_endian)).min, np.iinfo(np.dtype(big_endian)).max
        values = series.to_numpy()
        if len(values) and (values.min() < low or values.max() > high):
            return None  # out of range: let the server say so
        return _fixed(values, big_endian, None)
    if dtype == np.float64 and type_oid == FLOAT8:
        values = series.to_numpy()
        return _fixed(values, ">f8", np.isnan(values))
    if isinstance(dtype, pd.DatetimeTZDtype) and type_oid == TIMESTAMPTZ or (
        is_naive_datetime(dtype) and type_oid == TIMESTAMP
    ):
        # microseconds since 2000-01-01 (UTC for timestamptz, wall time for timestamp); the
        # nanoseconds dropped as Timestamp.to_pydatetime() drops them (floor)
        array = series.array
        missing = array.isna()
        micros = microseconds(array) - EPOCH_US
        return _fixed(micros, ">i8", missing)
    return None


def _fixed(values: np.ndarray, big_endian: str, missing: np.ndarray | None) -> _BinaryField:
    width = np.dtype(big_endian).itemsize
    fixed = values.astype(big_endian).view(np.uint8).reshape(len(values), width)
    lengths = np.full(len(values), width, dtype=np.int64)
    if missing is not None and missing.any():
        lengths[missing] = -1
    return _BinaryField(lengths, fixed=fixed)


def _binary_blocks(fields: list[_BinaryField], n: int, block_rows: int) -> Iterator[bytes]:
    k = len(fields)
    count = np.array([k], dtype=">i2").view(np.uint8)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
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


# --- reading ---------------------------------------------------------------------------------


def binary_frames(copy, driver, columns, oids, chunk_rows) -> Iterator[pd.DataFrame]:
    messages = _copy_messages(copy, driver)
    first = next(messages, None)
    if first is None or bytes(first[:11]) != SIGNATURE:
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
        width = np.dtype(_FIXED[oid]).itemsize if oid in _FIXED else 0
        present = ~missing
        if width == 0:
            if text is None:
                text = data.decode("latin-1")  # one character per byte: ASCII values slice as is
            frame[name] = _binary_text(data, text, array, start, length, present, encoding)
            continue
        if not (length[present] == width).all():
            raise StorageError(f"COPY BINARY: unexpected width in column {name!r}")
        values = _be(array, start[present], _FIXED[oid]).astype(np.int64 if oid != FLOAT8 else np.float64)
        if oid == DATE:
            column = _binary_dates(values, present)
            frame[name] = column if column is not None else _loaded_column(name, oid, data, start, length, driver)
        elif oid in (TIMESTAMPTZ, TIMESTAMP):
            column = _binary_timestamps(values, present, oid, zone)
            if column is None:  # infinity or outside datetime64[ns]: psycopg and pandas decide
                column = _loaded_column(name, oid, data, start, length, driver)
            frame[name] = column
        elif oid != FLOAT8 and not missing.any():
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
    if len(micros) and ((micros < -_NS_LIMIT_US - EPOCH_US) | (micros > _NS_LIMIT_US - EPOCH_US)).any():
        return None
    micros = micros + EPOCH_US
    ns = np.full(len(present), np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    ns[present] = micros * 1000
    index = pd.DatetimeIndex(ns.view("datetime64[ns]"))
    return index.tz_localize("UTC").tz_convert(zone).array if oid == TIMESTAMPTZ else index.array


def _binary_dates(days: np.ndarray, present: np.ndarray) -> np.ndarray:
    """`datetime.date` objects (None for NULL), as a fetch gives them."""
    out = np.full(len(present), None, dtype=object)
    since_1970 = days + _EPOCH_DAYS
    if len(since_1970) and not ((since_1970 >= _FIRST_DAY) & (since_1970 <= _LAST_DAY)).all():
        return None  # infinity, or a year datetime.date cannot hold: psycopg decides
    out[present] = since_1970.astype("datetime64[D]").astype(object)
    return out


def _loaded_column(name, oid, data: bytes, start, length, driver):
    """A column through psycopg's binary loader and `from_records`, as a fetch would make it."""
    from psycopg import pq

    loader = driver.adapters.get_loader(oid, pq.Format.BINARY)(oid, driver)
    values = [
        None if n < 0 else loader.load(data[a : a + n]) for a, n in zip(start.tolist(), length.tolist(), strict=True)
    ]
    return pd.DataFrame.from_records([(v,) for v in values], columns=[name], coerce_float=False)[name].array


# --- shared ----------------------------------------------------------------------------------


def is_naive_datetime(dtype) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind == "M"


_PER_MICROSECOND = {"ns": (1000, 1), "us": (1, 1), "ms": (1, 1000), "s": (1, 1_000_000)}


def microseconds(array) -> np.ndarray:
    """Microseconds since 1970 of a DatetimeArray of any unit (UTC for a zoned one); below a
    microsecond dropped (floor), as `to_pydatetime()` drops it. NaT entries are junk."""
    divide, multiply = _PER_MICROSECOND[array.unit]
    values = array.asi8
    return values // divide if divide != 1 else values * multiply
