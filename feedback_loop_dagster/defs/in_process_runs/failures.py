"""What failed in a set of runs, with where to look in the Dagster UI: one entry per failed
partition (a stage that failed it), or per failed run (a step that failed as a whole). The
command line prints these (`feedback-loop run`, `feedback-loop backfill`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from urllib.parse import quote

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from sqlalchemy.engine import Engine

from feedback_loop_dagster.defs.code_location.partitions import partition_key
from feedback_loop_dagster.lib.partition_status import failed_outcomes


@dataclass(frozen=True)
class Failure:
    partitions: str  # "'code-review' 2026-11-18", or the partition range of a failed run
    stage: str
    reason: str
    run_id: str
    ui: str  # paths in the Dagster UI, after its address (e.g. http://127.0.0.1:3000)

    def line(self) -> str:
        return f"{self.stage} failed for {self.partitions}: {self.reason} (in the UI: {self.ui})"

    def to_dict(self) -> dict[str, str]:
        return {"partitions": self.partitions, "stage": self.stage, "reason": self.reason, "run_id": self.run_id,
                "ui": self.ui}


def asset_partition_path(asset: str, key: str) -> str:
    """The UI page of one partition of an asset."""
    return f"/assets/{asset}?view=partitions&partition={quote(key, safe='')}"


def run_failures(
    instance: dg.DagsterInstance, warehouse: Engine, run_ids: Sequence[str], pairs: Iterable[tuple[str, date]]
) -> list[Failure]:
    """The failures of `run_ids`: failed runs first (each failed step once), then every partition
    of `pairs` (pattern key, window) that one of these runs failed, oldest window first."""
    failures = []
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status != dg.DagsterRunStatus.SUCCESS:
            failures += _failed_steps(instance, run)
    ours = set(run_ids)
    with warehouse.connect() as conn:
        for outcome in failed_outcomes(conn, pairs):
            if outcome.run_id in ours:
                key = str(partition_key(outcome.pattern_key, outcome.window))
                failures.append(
                    Failure(
                        f"{outcome.pattern_id!r} {outcome.window}",
                        outcome.stage,
                        outcome.reason or "",
                        outcome.run_id,
                        f"/runs/{outcome.run_id} and {asset_partition_path(outcome.stage, key)}",
                    )
                )
    return failures


def _failed_steps(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[Failure]:
    tags = run.tags
    if ASSET_PARTITION_RANGE_START_TAG in tags:
        partitions = f"{tags[ASSET_PARTITION_RANGE_START_TAG]} .. {tags[ASSET_PARTITION_RANGE_END_TAG]}"
    else:
        partitions = tags.get(PARTITION_NAME_TAG, "the run")
    failed = [
        (entry.step_key, _innermost(entry.dagster_event.step_failure_data.error))
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    ]
    if not failed:  # the run failed outside any step (e.g. its process died)
        failed = [("run", f"the run ended as {run.status.value}")]
    return [Failure(partitions, step, reason, run.run_id, f"/runs/{run.run_id}") for step, reason in failed]


def _innermost(error) -> str:
    """The message of the exception that started it all, on one line."""
    if error is None:
        return "no error recorded"
    while error.cause is not None:
        error = error.cause
    return " ".join(error.message.split())
