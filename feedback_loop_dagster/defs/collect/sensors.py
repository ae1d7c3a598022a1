"""`new_executions_sensor`: react to new executions by materialising exactly the touched partitions."""

from datetime import date

import dagster as dg

from feedback_loop_dagster.defs.jobs import PATTERN_TAG, feedback_loop_job
from feedback_loop_dagster.defs.partitions import partition_key, patterns_partitions, window_partitions
from feedback_loop_dagster.defs.resources import FeedbackDatabases
from feedback_loop_dagster.lib import settings
from feedback_loop_dagster.lib.collect.new_executions import SourceCursor, scan_new_executions
from feedback_loop_dagster.lib.storage.pattern_keys import register_pattern_ids

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
        "loop for every (pattern, window) that received rows, late and out-of-order rows included."
    ),
)
def new_executions_sensor(context: dg.SensorEvaluationContext, databases: FeedbackDatabases) -> dg.SensorResult:
    cursor = SourceCursor.from_json(context.cursor)
    found = scan_new_executions(
        databases.source,
        cursor,
        first_window=date.fromisoformat(window_partitions.start.date().isoformat()),
        last_window=date.fromisoformat(window_partitions.get_last_partition_key()),
        statement_timeout_ms=settings.source_timeout_ms(),
    )
    if found.unattributed_rows:
        context.log.warning(
            f"{found.unattributed_rows} new row(s) have no window in the partition range (started_at "
            "missing, unparseable, before the start date or in the future); they are not collected"
        )
    if found.pairs.empty:
        return dg.SensorResult(skip_reason="no new executions", cursor=found.cursor.to_json())

    keys = register_pattern_ids(databases.warehouse, found.pairs["pattern_id"].unique())
    known = set(context.instance.get_dynamic_partitions(patterns_partitions.name))
    new_keys = sorted(set(keys.values()) - known)
    run_requests = [
        dg.RunRequest(
            # Each row is reported once, so (partition, newest seq) names this batch uniquely.
            run_key=f"{keys[row.pattern_id]}|{row.window_start.isoformat()}|{row.max_seq}",
            partition_key=partition_key(keys[row.pattern_id], row.window_start),
            tags={PATTERN_TAG: keys[row.pattern_id]},
        )
        for row in found.pairs.itertuples(index=False)
    ]
    context.log.info(f"{len(run_requests)} partition(s) received new executions; {len(new_keys)} new pattern(s)")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[patterns_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=found.cursor.to_json(),
    )
