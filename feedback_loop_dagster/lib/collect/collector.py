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
from feedback_loop_dagster.lib.settings import SOURCE_TABLE
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import StorageError, redact
from feedback_loop_dagster.lib.storage.pattern_keys import pattern_ids_for_keys
from feedback_loop_dagster.lib.storage.writes import bulk_insert, upsert

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
    seen_hashes = np.empty(0, dtype=np.uint64)
    previews_valid, previews_bad = [], []
    wanted = pd.MultiIndex.from_tuples(pairs, names=["pattern_key", "window_start"])

    with warehouse.begin() as conn:
        _delete_partitions(conn, pairs)
        for raw in _read_source(source, columns, sorted(keys_by_id), pairs, chunk_rows):
            raw["pattern_key"] = raw["pattern_id"].map(keys_by_id)
            normalized, row_errors = normalize_executions(raw)
            normalized["pattern_key"] = raw["pattern_key"]
            normalized["window_start"] = window_of(normalized["started_at"])
            in_scope = pd.MultiIndex.from_frame(normalized[["pattern_key", "window_start"]]).isin(wanted)
            normalized, row_errors, raw = normalized[in_scope], row_errors[in_scope], raw[in_scope]
            if normalized.empty:
                continue
            seen_hashes = _flag_duplicates(normalized, row_errors, seen_hashes)
            valid, quarantined = validate_feedback(normalized, row_errors)
            quarantined = quarantined.assign(raw=_raw_json(raw.loc[quarantined.index, columns]))

            bulk_insert(conn, tables.feedback, valid[list(FEEDBACK_COLUMNS)])
            bulk_insert(conn, tables.feedback_quarantine, quarantined[list(QUARANTINE_COLUMNS)])

            for (key, window), n in valid.groupby(["pattern_key", "window_start"]).size().items():
                counts[(key, window)]["valid"] += int(n)
            for (key, window), n in quarantined.groupby(["pattern_key", "window_start"]).size().items():
                counts[(key, window)]["quarantined"] += int(n)
            for (key, window), seq in normalized.groupby(["pattern_key", "window_start"])["seq"].max().items():
                max_seq[(key, window)] = max(int(seq), max_seq.get((key, window), 0))
            report.reasons.update(quarantined["reason"])
            previews_valid.append(valid.head(PREVIEW_ROWS))
            previews_bad.append(quarantined.head(PREVIEW_ROWS))

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


def _delete_partitions(conn, pairs: Sequence[tuple[str, date]]) -> None:
    params = [{"k": key, "w": window} for key, window in pairs]
    for table in (tables.feedback, tables.feedback_quarantine):
        conn.execute(
            table.delete().where(table.c.pattern_key == sa.bindparam("k"), table.c.window_start == sa.bindparam("w")),
            params,
        )


def _read_source(
    source: Engine,
    columns: Sequence[str],
    pattern_ids: Sequence[str],
    pairs: Sequence[tuple[str, date]],
    chunk_rows: int,
) -> Iterator[pd.DataFrame]:
    """Stream the bounding box of the requested partitions, in seq order, as raw driver values.

    Raw values (no SQLAlchemy result processing) so that a malformed value in a loosely typed
    source becomes a quarantine reason instead of an exception that fails the partition.
    """
    first = min(w for _, w in pairs)
    last = max(w for _, w in pairs)
    lo = datetime.combine(first, datetime.min.time(), UTC)
    hi = datetime.combine(last + WINDOW, datetime.min.time(), UTC)
    t = tables.hook_executions
    selected = [sa.literal_column(f'"{c}"') for c in columns]
    query = (
        sa.select(*selected)
        .select_from(sa.table(SOURCE_TABLE))
        .where(
            sa.literal_column('"pattern_id"').in_(pattern_ids),
            sa.literal_column('"started_at"') >= sa.bindparam("lo", lo, type_=t.c.started_at.type),
            sa.literal_column('"started_at"') < sa.bindparam("hi", hi, type_=t.c.started_at.type),
        )
        .order_by(sa.literal_column('"seq"'))
    )
    with source.connect() as conn:
        result = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows).execute(query)
        while rows := result.fetchmany(chunk_rows):
            yield pd.DataFrame.from_records(rows, columns=list(columns), coerce_float=False)


def _flag_duplicates(normalized: pd.DataFrame, row_errors: pd.Series, seen: np.ndarray) -> np.ndarray:
    """Flags a repeated execution_id within a partition (the lowest seq wins); returns the seen set."""
    hashes = pd.util.hash_pandas_object(
        normalized[["pattern_key", "window_start", "execution_id"]].astype(str), index=False
    ).to_numpy()
    repeated = pd.Series(hashes).duplicated().to_numpy() | np.isin(hashes, seen)
    repeated &= normalized["execution_id"].notna().to_numpy()
    row_errors[repeated & row_errors.isna().to_numpy()] = "execution_id: duplicate of an earlier row in this window"
    return np.union1d(seen, hashes)


def _raw_json(raw: pd.DataFrame) -> list[str]:
    return [json.dumps(record, default=str) for record in raw.to_dict(orient="records")]
