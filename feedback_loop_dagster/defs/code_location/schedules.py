"""`daily_loop_schedule`: after a window closes, run the loop over it for every pattern.

The sensor already reacts to each execution as it arrives; the schedule is the daily sweep that
makes the latest complete window final for every pattern, those without new rows included (their
experiments still get a look, their analysis a window). The assets take ranges of partitions, so
the schedule asks for a few range runs over blocks of neighbouring patterns, not one run per
(pattern, window).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import dagster as dg

from feedback_loop_dagster.defs.code_location.jobs import feedback_loop_job
from feedback_loop_dagster.defs.code_location.partitions import patterns_partitions, window_partitions
from feedback_loop_dagster.defs.in_process_runs.runs import PATTERNS_PER_RUN, range_run_requests

# 00:30 UTC: the window of the day before closed 30 minutes ago, late rows have had time to land.
CRON = "30 0 * * *"


def window_closed_by(tick: date) -> date:
    """The window that closed at the midnight starting `tick`'s day."""
    return tick - timedelta(days=1)


def daily_run_requests(
    pattern_keys: Sequence[str], window: date, patterns_per_run: int = PATTERNS_PER_RUN
) -> list[dg.RunRequest]:
    """Range runs over `window` for `pattern_keys` (in the instance's partition order)."""
    return range_run_requests(pattern_keys, window, window, patterns_per_run, run_key_prefix="daily")


@dg.schedule(
    job=feedback_loop_job,
    cron_schedule=CRON,
    execution_timezone="UTC",
    description=(
        "Daily at 00:30 UTC: the loop over the window that just closed, for every pattern, in range "
        f"runs of up to {PATTERNS_PER_RUN} neighbouring patterns each."
    ),
)
def daily_loop_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    window = window_closed_by(context.scheduled_execution_time.date())
    first = date.fromisoformat(window_partitions.start.date().isoformat())
    if window < first:
        return dg.SkipReason(f"window {window} is before the first window {first}")
    # The instance's order of the `patterns` partitions: consecutive slices are valid ranges.
    keys = context.instance.get_dynamic_partitions(patterns_partitions.name)
    if not keys:
        return dg.SkipReason("no pattern partitions yet: the sensor adds them as executions arrive")
    requests = daily_run_requests(keys, window)
    context.log.info(f"window {window}: {len(keys)} pattern(s) in {len(requests)} run(s)")
    return requests
