"""Collect a set of (pattern, window) partitions in one pass over the source.

Set-based: one streamed query reads every requested partition (the bounding box of patterns and
windows, then filtered to the exact pairs), and one warehouse transaction replaces those
partitions' rows, so a range run of hundreds of partitions costs one scan, and a crash leaves
the partitions as they were.
"""

from __future__ import annotations

import json
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
from feedback_loop_dagster.lib import settings
from feedback_loop_dagster.lib.settings import SOURCE_TABLE
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import StorageError, redact
from feedback_loop_dagster.lib.storage.partition_rows import delete_partition_rows
from feedback_loop_dagster.lib.storage.pattern_keys import pattern_ids_for_keys
from feedback_loop_dagster.lib.storage.reads import read_frames
from feedback_loop_dagster.lib.storage.writes import bulk_insert_batches, upsert

CHUNK_ROWS = 200_000
# Rows of each partition kept for its preview (the first ones in seq order).
PREVIEW_ROWS = 5
PARTITION_COLUMNS = ["pattern_key", "window_start"]
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
    reasons: Counter = field(default_factory=Counter)  # quarantined rows by reason

    @property
    def invalid_share(self) -> float:
        return self.quarantined_rows / self.source_rows if self.source_rows else 0.0


@dataclass
class CollectionReport:
    partitions: list[PartitionCounts]
    # The first PREVIEW_ROWS rows of each partition, with its pattern_key and window_start.
    preview_valid: pd.DataFrame = field(default_factory=pd.DataFrame)
    preview_quarantined: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def reasons(self) -> Counter:
        """Quarantined rows by reason, over every partition."""
        return sum((p.reasons for p in self.partitions), Counter())

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
    max_duration_ms: float | None = None,
) -> CollectionReport:
    """Replace the warehouse rows of `partitions` ((pattern_key, window_start) pairs) from the source.

    `max_duration_ms`: the duration ceiling (default: settings.max_duration_ms(), 24 h unless
    FEEDBACK_LOOP_MAX_DURATION_MS says otherwise); longer executions are quarantined."""
    ceiling = settings.max_duration_ms() if max_duration_ms is None else float(max_duration_ms)
    pairs = sorted(set(partitions))
    if not pairs:
        return CollectionReport(partitions=[])
    ids_by_key = pattern_ids_for_keys(warehouse, {k for k, _ in pairs})
    keys_by_id = {pattern_id: key for key, pattern_id in ids_by_key.items()}
    columns = source_columns(source)

    counts = {pair: Counter() for pair in pairs}
    reasons = {pair: Counter() for pair in pairs}
    max_seq: dict[tuple[str, date], int] = {}
    report = CollectionReport(partitions=[])
    previews_valid, previews_bad = [], []
    kept_valid, kept_bad = Counter(), Counter()

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
            valid, quarantined = validate_feedback(normalized, row_errors, ceiling)
            quarantined = quarantined.assign(raw=_raw_json(raw.loc[quarantined.index, columns]))

            for (key, window), n in valid.groupby(["pattern_key", "window_start"]).size().items():
                counts[(key, window)]["valid"] += int(n)
            for (key, window), n in quarantined.groupby(["pattern_key", "window_start"]).size().items():
                counts[(key, window)]["quarantined"] += int(n)
            for (key, window), seq in normalized.groupby(["pattern_key", "window_start"])["seq"].max().items():
                max_seq[(key, window)] = max(int(seq), max_seq.get((key, window), 0))
            for (key, window, reason), n in quarantined.groupby([*PARTITION_COLUMNS, "reason"]).size().items():
                reasons[(key, window)][reason] += int(n)
            _keep_preview(previews_valid, kept_valid, valid)
            _keep_preview(previews_bad, kept_bad, quarantined)

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
                reasons=reasons[(key, window)],
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
    report.preview_valid = pd.concat(previews_valid) if previews_valid else pd.DataFrame()
    report.preview_quarantined = pd.concat(previews_bad) if previews_bad else pd.DataFrame()
    return report


def _read_source(
    source: Engine,
    columns: Sequence[str],
    pattern_ids: Sequence[str],
    pairs: Sequence[tuple[str, date]],
    chunk_rows: int,
) -> Iterator[pd.DataFrame]:
    """Stream the bounding box of the requested partitions, in seq order, as raw driver values
    (`read_frames`), so that a malformed value in a loosely typed source becomes a quarantine
    reason instead of an exception that fails the partition."""
    with source.connect() as conn:
        yield from read_frames(conn, _source_query(columns, pattern_ids, pairs), list(columns), chunk_rows)


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


def _keep_preview(previews: list[pd.DataFrame], kept: Counter, frame: pd.DataFrame) -> None:
    """Adds the first rows of each partition in `frame` until that partition has PREVIEW_ROWS
    (`kept` counts them), as a copy: a slice would keep the whole chunk alive until the run ends."""
    if not len(frame):
        return
    heads = frame.groupby(PARTITION_COLUMNS, sort=False).head(PREVIEW_ROWS)
    pairs = list(zip(heads["pattern_key"], heads["window_start"], strict=True))
    rank = heads.groupby(PARTITION_COLUMNS, sort=False).cumcount().to_numpy()
    room = np.array([kept[pair] for pair in pairs], dtype=np.int64) + rank < PREVIEW_ROWS
    if room.any():
        kept.update(pair for pair, keep in zip(pairs, room, strict=True) if keep)
        previews.append(heads[room].copy())


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
