"""Finding executions the loop has not seen yet, by the source's insertion sequence.

A plain "seq > last seen" cursor misses rows whose transaction committed after a row with a
larger seq (concurrent writers, sequence caching). The cursor therefore remembers the seqs below
its high-water mark that were still missing when it last looked (gaps) and looks at them again
until they are older than `overlap` seqs. Each row is reported once, so a run key built from the
rows it reports dedupes repeated ticks without suppressing a late row.

What is collected already is the warehouse's record of the source seqs each partition holds
(`feedback` and `feedback_quarantine`): `uncollected` drops scanned rows a backfill or the CLI
collected before the sensor saw them, so a sensor turned on after them requests nothing again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from feedback_loop_dagster.lib.collect.collector import window_of
from feedback_loop_dagster.lib.collect.source import unseen_rows_query

DEFAULT_OVERLAP = 10_000
DEFAULT_SCAN_LIMIT = 100_000
MAX_GAP_RANGES = 1_000


@dataclass
class SourceCursor:
    high_water: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)  # inclusive seq ranges not yet seen

    def to_json(self) -> str:
        # the sensor's cursor: Dagster stores it as a string, not a warehouse column
        return json.dumps({"high_water": self.high_water, "gaps": self.gaps})

    @classmethod
    def from_json(cls, text: str | None) -> SourceCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(int(data["high_water"]), [(int(a), int(b)) for a, b in data.get("gaps", [])])


@dataclass
class NewExecutions:
    pairs: pd.DataFrame  # pattern_id, window_start, rows, max_seq: one row per (pattern, window)
    cursor: SourceCursor
    unattributed_rows: int  # rows before first_window or without a parseable started_at
    rows: pd.DataFrame  # seq, pattern_id, window_start: the attributable rows themselves


def scan_new_executions(
    source: Engine,
    cursor: SourceCursor,
    first_window: date,
    last_window: date,
    limit: int = DEFAULT_SCAN_LIMIT,
    overlap: int = DEFAULT_OVERLAP,
    statement_timeout_ms: int | None = None,
) -> NewExecutions:
    query = unseen_rows_query(cursor.high_water, cursor.gaps, limit)
    with source.connect() as conn:
        if statement_timeout_ms and source.dialect.name == "postgresql":
            conn.execute(sa.text(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}"))
        rows = pd.DataFrame(conn.execute(query).all(), columns=["seq", "pattern_id", "started_at"])

    seqs = rows["seq"].to_numpy(dtype=np.int64)
    next_cursor = _advance(cursor, seqs, overlap)
    started = pd.to_datetime(rows["started_at"], errors="coerce", utc=True, format="ISO8601")
    rows["window_start"] = window_of(started)
    attributable = started.notna() & (rows["window_start"] >= first_window) & (rows["window_start"] <= last_window)
    found = rows.loc[attributable, ["seq", "pattern_id", "window_start"]].reset_index(drop=True)
    return NewExecutions(
        pairs=pairs_of(found), cursor=next_cursor, unattributed_rows=int((~attributable).sum()), rows=found
    )


def pairs_of(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (pattern_id, window_start) of `rows`: how many rows and the newest seq."""
    return rows.groupby(["pattern_id", "window_start"], as_index=False).agg(rows=("seq", "size"), max_seq=("seq", "max"))


def uncollected(warehouse: Engine, rows: pd.DataFrame, keys: dict[str, str], chunk: int = 500) -> pd.DataFrame:
    """The `rows` (seq, pattern_id, window_start) whose seq the warehouse does not hold yet, as
    valid or quarantined feedback of their partition; `keys` maps pattern ids to partition keys.

    Read by partition (the tables' leading index columns) and the rows' seq range, `chunk`
    partitions per query, so the cost follows the rows scanned, not the warehouse's size."""
    from feedback_loop_dagster.lib.storage.tables import feedback, feedback_quarantine

    if rows.empty:
        return rows
    partitions = rows.assign(pattern_key=rows["pattern_id"].map(keys)).groupby(["pattern_key", "window_start"])
    bounds = partitions["seq"].agg(["min", "max"]).reset_index().to_dict("records")
    held: set[int] = set()
    with warehouse.connect() as conn:
        for start in range(0, len(bounds), chunk):
            part = bounds[start : start + chunk]
            for table in (feedback, feedback_quarantine):
                query = sa.select(table.c.seq).where(
                    table.c.pattern_key.in_({b["pattern_key"] for b in part}),
                    table.c.window_start.in_({b["window_start"] for b in part}),
                    table.c.seq.between(min(b["min"] for b in part), max(b["max"] for b in part)),
                )
                held.update(conn.scalars(query))
    return rows[~rows["seq"].isin(held)].reset_index(drop=True)


def _advance(cursor: SourceCursor, seqs: np.ndarray, overlap: int) -> SourceCursor:
    """New high-water mark and gaps after seeing `seqs` (sorted)."""
    gaps = _subtract(cursor.gaps, seqs[seqs <= cursor.high_water])
    fresh = seqs[seqs > cursor.high_water]
    high_water = int(fresh[-1]) if len(fresh) else cursor.high_water
    if len(fresh):
        bounds = np.concatenate(([cursor.high_water], fresh))
        holes = np.flatnonzero(np.diff(bounds) > 1)
        gaps += [(int(bounds[i] + 1), int(bounds[i + 1] - 1)) for i in holes]
    horizon = high_water - overlap
    gaps = [(max(a, horizon + 1), b) for a, b in gaps if b > horizon]
    return SourceCursor(high_water, gaps[-MAX_GAP_RANGES:])


def _subtract(gaps: list[tuple[int, int]], seen: np.ndarray) -> list[tuple[int, int]]:
    remaining = []
    for a, b in gaps:
        inside = seen[(seen >= a) & (seen <= b)]
        start = a
        for s in inside:
            if s > start:
                remaining.append((start, int(s) - 1))
            start = int(s) + 1
        if start <= b:
            remaining.append((start, b))
    return remaining
