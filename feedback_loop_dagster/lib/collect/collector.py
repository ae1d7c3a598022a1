"""Collect a set of (pattern, window) partitions in one pass over the source.

Set-based: one streamed query reads every requested partition (the bounding box of patterns and
windows, then filtered to the exact pairs), and one warehouse transaction replaces those
partitions' rows, so a range run of hundreds of partitions costs one scan, and a crash leaves
the partitions as they were.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import NoSuchTableError

from feedback_loop_dagster.lib.collect.normalize import normalize_executions
from feedback_loop_dagster.lib.collect.validate import validate_feedback
from feedback_loop_dagster.lib.settings import SOURCE_TABLE
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import StorageError, is_postgres, redact
from feedback_loop_dagster.lib.storage.partition_rows import delete_partition_rows
from feedback_loop_dagster.lib.storage.pattern_keys import pattern_ids_for_keys
from feedback_loop_dagster.lib.storage.writes import bulk_insert_batches, upsert

CHUNK_ROWS = 200_000
PREVIEW_ROWS = 10
WINDOW = timedelta(days=1)
SOURCE_COLUMNS = tuple(c.name for c in tables.hook_executions.columns)
FEEDBACK_COLUMNS = tuple(c.name for c in tables.feedback.columns)
QUARANTINE_COLUMNS = tuple(c.name for c in tables.feedback_quarantine.columns)


@dataclass(frozen=True)
class PartitionCounts:
    pattern_key: str
    window_start: date
    pattern_id: str
    source_rows: int
    valid_rows: int
    quarantined_rows: int

    @property
    def invalid_share(self) -> float:
        return self.quarantined_rows / self.source_rows if self.source_rows else 0.0


@dataclass
class CollectionReport:
    partitions: list[PartitionCounts]
    reasons: Counter = field(default_factory=Counter)
    preview_valid: pd.DataFrame = field(default_factory=pd.DataFrame)
    preview_quarantined: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def source_rows(self) -> int:
        return sum(p.source_rows for p in self.partitions)

    @property
    def valid_rows(self) -> int:
        return sum(p.valid_rows for p in self.partitions)

    @property
    def quarantined_rows(self) -> int:
        return sum(p.quarantined_rows for p in self.partitions)


def window_of(started_at: pd.Series) -> pd.Series:
    """The daily window (UTC date) an execution belongs to."""
    return started_at.dt.floor("D").dt.date


def source_columns(source: Engine, table: str = SOURCE_TABLE) -> list[str]:
    """The contract columns the source has; a clear error when the table or a required column is missing."""
    try:
        present = {c["name"] for c in sa.inspect(source).get_columns(table)}
    except NoSuchTableError:
        raise StorageError(
            f"source table {table!r} not found in {redact(str(source.url))}: run `feedback-loop init-db` "
            "or point FEEDBACK_LOOP_SOURCE_URL at the database that has it (a view with the same columns works)"
        ) from None
    missing = [c for c in tables.REQUIRED_SOURCE_COLUMNS if c not in present]
    if missing:
        raise StorageError(f"source table {table!r} is missing required column(s): {', '.join(missing)}")
    return [c for c in SOURCE_COLUMNS if c in present]


def collect_feedback(
    source: Engine,
    warehouse: Engine,
    partitions: Sequence[tuple[str, date]],
    chunk_rows: int = CHUNK_ROWS,
) -> CollectionReport:
    """Replace the warehouse rows of `partitions` ((pattern_key, window_start) pairs) from the source."""
    pairs = sorted(set(partitions))
    if not pairs:
        return CollectionReport(partitions=[])
    ids_by_key = pattern_ids_for_keys(warehouse, {k for k, _ in pairs})
    keys_by_id = {pattern_id: key for key, pattern_id in ids_by_key.items()}
    columns = source_columns(source)

    counts = {pair: Counter() for pair in pairs}
    max_seq: dict[tuple[str, date], int] = {}
    report = CollectionReport(partitions=[])
    previews_valid, previews_bad = [], []

    def batches() -> Iterator[tuple[sa.Table, pd.DataFrame]]:
        """(table, rows) to write, chunk by chunk. Valid rows go straight out, so on PostgreSQL
        one COPY into `feedback` stays open and the server ingests a chunk while the next one is
        normalised and validated; quarantined rows (a few percent) are written in chunks too."""
        seen_hashes = np.empty(0, dtype=np.uint64)
        wanted = _PartitionFilter(pairs)
        pending_bad: list[pd.DataFrame] = []
        pending_rows = 0
        for raw in _read_source(source, columns, sorted(keys_by_id), pairs, chunk_rows):
            raw["pattern_key"] = raw["pattern_id"].map(keys_by_id)
            normalized, row_errors = normalize_executions(raw)
            normalized["pattern_key"] = raw["pattern_key"]
            in_scope, normalized["window_start"] = wanted.windows(normalized["pattern_key"], normalized["started_at"])
            normalized, row_errors, raw = normalized[in_scope], row_errors[in_scope], raw[in_scope]
            if normalized.empty:
                continue
            seen_hashes = _flag_duplicates(normalized, row_errors, seen_hashes)
            valid, quarantined = validate_feedback(normalized, row_errors)
            quarantined = quarantined.assign(raw=_raw_json(raw.loc[quarantined.index, columns]))

            for (key, window), n in valid.groupby(["pattern_key", "window_start"]).size().items():
                counts[(key, window)]["valid"] += int(n)
            for (key, window), n in quarantined.groupby(["pattern_key", "window_start"]).size().items():
                counts[(key, window)]["quarantined"] += int(n)
            for (key, window), seq in normalized.groupby(["pattern_key", "window_start"])["seq"].max().items():
                max_seq[(key, window)] = max(int(seq), max_seq.get((key, window), 0))
            report.reasons.update(quarantined["reason"])
            previews_valid.append(valid.head(PREVIEW_ROWS))
            previews_bad.append(quarantined.head(PREVIEW_ROWS))

            yield tables.feedback, valid[list(FEEDBACK_COLUMNS)]
            if len(quarantined):
                pending_bad.append(quarantined[list(QUARANTINE_COLUMNS)])
                pending_rows += len(quarantined)
            if pending_rows >= chunk_rows:
                yield tables.feedback_quarantine, pd.concat(pending_bad)
                pending_bad, pending_rows = [], 0
        if pending_bad:
            yield tables.feedback_quarantine, pd.concat(pending_bad)

    with warehouse.begin() as conn:
        for table in (tables.feedback, tables.feedback_quarantine):
            delete_partition_rows(conn, table, pairs)
        bulk_insert_batches(conn, batches())

        now = datetime.now(UTC)
        report.partitions = [
            PartitionCounts(
                pattern_key=key,
                window_start=window,
                pattern_id=ids_by_key[key],
                source_rows=counts[(key, window)]["valid"] + counts[(key, window)]["quarantined"],
                valid_rows=counts[(key, window)]["valid"],
                quarantined_rows=counts[(key, window)]["quarantined"],
            )
            for key, window in pairs
        ]
        upsert(
            conn,
            tables.feedback_partitions,
            [
                {
                    "pattern_key": p.pattern_key,
                    "window_start": p.window_start,
                    "pattern_id": p.pattern_id,
                    "source_rows": p.source_rows,
                    "valid_rows": p.valid_rows,
                    "quarantined_rows": p.quarantined_rows,
                    "max_seq": max_seq.get((p.pattern_key, p.window_start)),
                    "collected_at": now,
                }
                for p in report.partitions
            ],
            ["pattern_key", "window_start"],
        )
    report.preview_valid = pd.concat(previews_valid).head(PREVIEW_ROWS) if previews_valid else pd.DataFrame()
    report.preview_quarantined = pd.concat(previews_bad).head(PREVIEW_ROWS) if previews_bad else pd.DataFrame()
    return report


def _read_source(
    source: Engine,
    columns: Sequence[str],
    pattern_ids: Sequence[str],
    pairs: Sequence[tuple[str, date]],
    chunk_rows: int,
) -> Iterator[pd.DataFrame]:
    """Stream the bounding box of the requested partitions, in seq order, as raw driver values.

    Raw values (no SQLAlchemy result processing) so that a malformed value in a loosely typed
    source becomes a quarantine reason instead of an exception that fails the partition. Each
    chunk is the frame `DataFrame.from_records` makes of `chunk_rows` fetched rows; on PostgreSQL
    the rows arrive through COPY and are turned into that same frame column by column
    (`_read_copy_frames`), which is several times cheaper than fetching Python objects row by row.
    """
    query = _source_query(columns, pattern_ids, pairs)
    with source.connect() as conn:
        if is_postgres(source):
            yield from _read_copy_frames(conn, query, list(columns), chunk_rows)
            return
        compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        params = compiled.construct_params()
        cursor = conn.connection.driver_connection.cursor()  # plain tuples: no Row objects
        try:
            cursor.execute(str(compiled), tuple(params[name] for name in compiled.positiontup))
            while rows := cursor.fetchmany(chunk_rows):
                yield pd.DataFrame.from_records(rows, columns=list(columns), coerce_float=False)
        finally:
            cursor.close()


def _source_query(columns: Sequence[str], pattern_ids: Sequence[str], pairs: Sequence[tuple[str, date]]) -> sa.Select:
    first = min(w for _, w in pairs)
    last = max(w for _, w in pairs)
    lo = datetime.combine(first, datetime.min.time(), UTC)
    hi = datetime.combine(last + WINDOW, datetime.min.time(), UTC)
    t = tables.hook_executions
    selected = [sa.literal_column(f'"{c}"') for c in columns]
    return (
        sa.select(*selected)
        .select_from(sa.table(SOURCE_TABLE))
        .where(
            sa.literal_column('"pattern_id"').in_(pattern_ids),
            sa.literal_column('"started_at"') >= sa.bindparam("lo", lo, type_=t.c.started_at.type),
            sa.literal_column('"started_at"') < sa.bindparam("hi", hi, type_=t.c.started_at.type),
        )
        .order_by(sa.literal_column('"seq"'))
    )


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


def _flag_duplicates(normalized: pd.DataFrame, row_errors: pd.Series, seen: np.ndarray) -> np.ndarray:
    """Flags a repeated execution_id within a partition (the lowest seq wins); returns the seen set.

    `seen` is a sorted array of the hashes of earlier chunks' rows.
    """
    keys = pd.DataFrame({c: _as_str(normalized[c]) for c in ("pattern_key", "window_start", "execution_id")})
    # categorize=False: the same hashes, without first factorising a column of unique ids
    hashes = pd.util.hash_pandas_object(keys, index=False, categorize=False).to_numpy()
    repeated = pd.Series(hashes).duplicated().to_numpy() | _in_sorted(hashes, seen)
    repeated &= normalized["execution_id"].notna().to_numpy()
    row_errors[repeated & row_errors.isna().to_numpy()] = "execution_id: duplicate of an earlier row in this window"
    merged = np.concatenate([seen, np.unique(hashes)])
    merged.sort(kind="stable")  # two sorted runs: a linear merge
    return merged[np.concatenate(([True], merged[1:] != merged[:-1]))] if len(merged) else merged


def _as_str(series: pd.Series) -> pd.Series:
    """`series.astype(str)`, without converting each value when they are already str or repeat."""
    values = series.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(values, skipna=False) == "string":
        return pd.Series(values, index=series.index, dtype=object)
    if series.isna().any():
        return series.astype(str)  # None -> 'None', NaN -> 'nan', NaT -> 'NaT'
    codes, uniques = pd.factorize(values)
    if len(uniques) > len(values) // 4:
        return series.astype(str)
    return pd.Series(pd.Series(uniques, dtype=object).astype(str).to_numpy()[codes], index=series.index, dtype=object)


def _in_sorted(values: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(sorted_values, values).clip(max=len(sorted_values) - 1)
    return sorted_values[at] == values


class _PartitionFilter:
    """Which rows belong to a requested (pattern_key, window) pair, and their windows, with
    integer arithmetic instead of hashing a date object per row."""

    def __init__(self, pairs: Sequence[tuple[str, date]]) -> None:
        self.keys = pd.Index(sorted({k for k, _ in pairs}), dtype=object)
        key_position = {k: i for i, k in enumerate(self.keys)}
        self.wanted = np.array([key_position[k] * _DAYS + _day_number(w) for k, w in pairs], dtype=np.int64)

    def windows(self, pattern_key: pd.Series, started_at: pd.Series) -> tuple[np.ndarray, pd.Series]:
        """(in-scope mask, window_of(started_at)) for UTC timestamps."""
        array = started_at.array
        missing = started_at.isna().to_numpy()
        days = np.where(missing, 0, array.asi8 // (_DAY_NS // _NS_PER_UNIT[array.unit]))
        key = self.keys.get_indexer(pattern_key.to_numpy(dtype=object))
        in_scope = ~missing & (key >= 0) & np.isin(key * _DAYS + days - _DAY_ZERO, self.wanted)
        unique_days, inverse = np.unique(days, return_inverse=True)
        dates = np.array([_EPOCH + timedelta(days=int(d)) for d in unique_days] + [pd.NaT], dtype=object)
        windows = dates[np.where(missing, len(unique_days), inverse)]
        return in_scope, pd.Series(windows, index=started_at.index, dtype=object)


_EPOCH = date(1970, 1, 1)
_DAY_NS = 86_400 * 10**9
_NS_PER_UNIT = {"ns": 1, "us": 1000, "ms": 10**6, "s": 10**9}
_DAY_ZERO = -(10**6)  # day numbers are shifted by this so they stay positive
_DAYS = 10**7  # more days than datetime64[ns] can hold, offset included


def _day_number(day: date) -> int:
    return (day - _EPOCH).days - _DAY_ZERO


def _raw_json(raw: pd.DataFrame) -> list[str]:
    # `to_dict(orient="records")`, column by column: tolist() boxes values as to_dict does.
    columns = list(raw.columns)
    values = [raw[c].tolist() for c in columns]
    return [json.dumps(dict(zip(columns, record, strict=True)), default=str) for record in zip(*values, strict=True)]
