"""Each (pattern, window) partition's outcome at each stage of the loop.

A stage records, for every partition it was asked to process, one of:

- `ok`: the stage did its work for the partition;
- `failed`, with the reason: the partition's feedback failed validation, or the stage raised for
  it (its own changes were rolled back, the other partitions' were kept);
- `skipped`, with the reason: an earlier stage failed the partition, so this one left it alone.

A stage skips a partition when the latest outcome of any earlier stage for it is not `ok`: the
table holds the state of the data, so a partition that failed collection stays blocked until it
is collected again and passes, whichever assets a later run selects. The reason of a skip always
names the stage that failed and why, however many stages lie between.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.upserts import upsert

# The loop's stages (its assets) in the order data flows through them.
STAGES = (
    "feedback_dataset",
    "pattern_analysis",
    "improvement_proposals",
    "experiments",
    "ab_test_results",
    "applied_improvements",
    "pattern_lineage",
)
OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass(frozen=True)
class StageOutcome:
    """What one stage did for one partition."""

    pattern_key: str
    window: date
    pattern_id: str
    stage: str
    status: str
    reason: str | None = None
    run_id: str | None = None

    @property
    def pair(self) -> tuple[str, date]:
        return self.pattern_key, self.window


def record_outcomes(conn: Connection, outcomes: Sequence[StageOutcome]) -> None:
    """Store (replace) the outcomes, in the caller's transaction: one statement for all."""
    for outcome in outcomes:
        if outcome.stage not in STAGES or outcome.status not in (OK, FAILED, SKIPPED):
            raise ValueError(f"not a stage outcome: {outcome.stage!r} {outcome.status!r}")
    now = datetime.now(UTC)
    upsert(
        conn,
        tables.partition_status,
        [
            {
                "pattern_key": o.pattern_key,
                "window_start": o.window,
                "stage": o.stage,
                "pattern_id": o.pattern_id,
                "status": o.status,
                "reason": o.reason,
                "run_id": o.run_id,
                "updated_at": now,
            }
            for o in outcomes
        ],
        ["pattern_key", "window_start", "stage"],
    )


def blocked_partitions(conn: Connection, stage: str, pairs: Iterable[tuple[str, date]]) -> dict[tuple[str, date], str]:
    """The pairs an earlier stage did not complete, each with the reason to skip it: the failure
    of the earliest such stage, in loop order."""
    earlier = STAGES[: STAGES.index(stage)]
    blocked: dict[tuple[str, date], str] = {}
    for o in sorted(_outcomes(conn, pairs, earlier, exclude_ok=True), key=lambda o: STAGES.index(o.stage)):
        blocked.setdefault(o.pair, _skip_reason(o))
    return blocked


def failed_outcomes(conn: Connection, pairs: Iterable[tuple[str, date]]) -> list[StageOutcome]:
    """The failures among the pairs' latest outcomes (any stage), oldest window first."""
    found = [o for o in _outcomes(conn, pairs, STAGES, exclude_ok=True) if o.status == FAILED]
    return sorted(found, key=lambda o: (o.window, o.pattern_id, STAGES.index(o.stage)))


def stage_outcomes(conn: Connection, pattern_key: str, window: date) -> dict[str, StageOutcome]:
    """One partition's latest outcome at each stage that recorded one."""
    return {o.stage: o for o in _outcomes(conn, [(pattern_key, window)], STAGES, exclude_ok=False)}


def _skip_reason(outcome: StageOutcome) -> str:
    # A skip's reason already names the failure it follows from.
    return outcome.reason if outcome.status == SKIPPED else f"{outcome.stage} failed: {outcome.reason}"


def _outcomes(
    conn: Connection, pairs: Iterable[tuple[str, date]], stages: Sequence[str], exclude_ok: bool
) -> list[StageOutcome]:
    wanted = set(pairs)
    if not wanted or not stages:
        return []
    t = tables.partition_status
    # The bounding box of the pairs uses the primary key; the exact pairs are kept in Python.
    query = sa.select(t).where(
        t.c.pattern_key.in_(sorted({k for k, _ in wanted})),
        t.c.window_start.between(min(w for _, w in wanted), max(w for _, w in wanted)),
        t.c.stage.in_(list(stages)),
    )
    if exclude_ok:
        query = query.where(t.c.status != OK)
    return [
        StageOutcome(r.pattern_key, r.window_start, r.pattern_id, r.stage, r.status, r.reason, r.run_id)
        for r in conn.execute(query)
        if (r.pattern_key, r.window_start) in wanted
    ]
