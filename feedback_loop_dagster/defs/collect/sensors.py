"""`new_executions_sensor`: react to new executions by materialising exactly the partitions that
received rows nobody has collected yet, in range runs.

It starts where the data stands: rows a backfill, the demo or the CLI already collected (the
warehouse holds their seqs, see `uncollected`) are not requested again, so turning it on after
them asks for nothing. The partitions still to do are covered by range runs (a block of
neighbouring patterns x a range of consecutive windows, `partition_rectangles`), each with the
tags the schedule's runs carry, instead of one run per partition.
"""

from datetime import date, timedelta

import dagster as dg

from feedback_loop_dagster.defs.code_location.jobs import feedback_loop_job
from feedback_loop_dagster.defs.code_location.partitions import patterns_partitions, window_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.in_process_runs.runs import partition_rectangles, range_run_requests
from feedback_loop_dagster.lib import settings
from feedback_loop_dagster.lib.collect.new_executions import SourceCursor, scan_new_executions, uncollected
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids

# A slow or locked source must not hold the sensor daemon (and the sensors queued behind it):
# the source query gets a statement timeout (FEEDBACK_LOOP_SOURCE_TIMEOUT_MS, default 20 s, read at
# each tick) that also bounds lock waits on PostgreSQL.


@dg.sensor(
    job=feedback_loop_job,
    # FEEDBACK_LOOP_SENSOR_INTERVAL_SECONDS (default 30), read when the code location loads.
    minimum_interval_seconds=settings.sensor_interval_seconds(),
    # FEEDBACK_LOOP_SENSOR_DEFAULT_STATUS=running turns it on without a click (deployments, tests).
    default_status=(
        dg.DefaultSensorStatus.RUNNING if settings.sensor_running_by_default() else dg.DefaultSensorStatus.STOPPED
    ),
    description=(
        "Polls hook_executions by insertion sequence; adds partitions for new patterns and runs the "
        "loop, in range runs, for every (pattern, window) that received rows not collected yet, late "
        "and out-of-order rows included."
    ),
)
def new_executions_sensor(context: dg.SensorEvaluationContext, databases: FeedbackDatabases) -> dg.SensorResult:
    cursor = SourceCursor.from_json(context.cursor)
    first_window = date.fromisoformat(window_partitions.start.date().isoformat())
    found = scan_new_executions(
        databases.source,
        cursor,
        first_window=first_window,
        last_window=date.fromisoformat(window_partitions.get_last_partition_key()),
        statement_timeout_ms=settings.source_timeout_ms(),
    )
    if found.unattributed_rows:
        context.log.warning(
            f"{found.unattributed_rows} new row(s) have no window in the partition range {first_window}.. "
            "(started_at missing, unparseable, before the start date or in the future); they are not "
            "collected. Rows before the start date: `feedback-loop patterns sync` records the earliest day, "
            "then reload the code location and backfill those days."
        )
    if found.rows.empty:
        return dg.SensorResult(skip_reason="no new executions", cursor=found.cursor.to_json())

    keys = register_pattern_ids(databases.warehouse, found.rows["pattern_id"].unique())
    known = context.instance.get_dynamic_partitions(patterns_partitions.name)
    new_keys = sorted(set(keys.values()) - set(known))
    partition_requests = [patterns_partitions.build_add_request(new_keys)] if new_keys else []
    pending = uncollected(databases.warehouse, found.rows, keys)
    if pending.empty:
        return dg.SensorResult(
            skip_reason=f"{len(found.rows)} new row(s), all collected already (by a backfill, the demo or the CLI)",
            dynamic_partitions_requests=partition_requests,
            cursor=found.cursor.to_json(),
        )

    pending = pending.assign(pattern_key=pending["pattern_id"].map(keys))
    newest = pending.groupby(["pattern_key", "window_start"])["seq"].max().to_dict()
    run_requests = []
    # The daemon adds the new keys (in this order) before it submits the runs.
    for block, first, last in partition_rectangles([*known, *new_keys], newest):
        # Every partition of a rectangle is pending, and each row is reported once, so the
        # rectangle's newest seq names this batch uniquely: a tick evaluated twice requests
        # nothing new, a late row gets a run of its own.
        days = [first + timedelta(days=d) for d in range((last - first).days + 1)]
        batch = max(newest[(key, day)] for key in block for day in days)
        run_requests += range_run_requests(block, first, last, run_key_prefix=f"new-executions|seq {batch}")
    context.log.info(
        f"{len(newest)} partition(s) received {len(pending)} row(s) not collected yet "
        f"({len(found.rows) - len(pending)} already were): {len(run_requests)} range run(s); "
        f"{len(new_keys)} new pattern(s)"
    )
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=partition_requests,
        cursor=found.cursor.to_json(),
    )
