"""`pattern_analysis`: metrics per pattern version over the trailing window, with regressions."""

import json

import dagster as dg
import pandas as pd

from feedback_loop_dagster.defs.collect.assets import feedback_dataset
from feedback_loop_dagster.defs.metadata import table_metadata
from feedback_loop_dagster.defs.partitions import pattern_window_partitions, run_partition_pairs
from feedback_loop_dagster.defs.resources import FeedbackDatabases
from feedback_loop_dagster.lib.analyze.analysis import analyze_partitions

SHOWN_COLUMNS = [
    "pattern_id",
    "window_start",
    "version",
    "executions",
    "success_rate",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "latency_geomean",
    "quality_mean",
    "rating_mean",
    "retries_mean",
    "regressions",
]


@dg.asset(
    deps=[feedback_dataset],
    partitions_def=pattern_window_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="analyze",
    kinds={"pandas", "sql"},
)
def pattern_analysis(context: dg.AssetExecutionContext, databases: FeedbackDatabases) -> dg.MaterializeResult:
    """Per version over the trailing `time_window_days`: volume, success rate, latency p50/p95/p99
    and geometric mean, quality, rating, retries and top error classes, compared with the period
    before; a metric is a regression only when the engine's test finds it significantly worse.

    Also refreshes the mergeable daily statistics (`daily_version_stats`) that A/B results add up.
    """
    report = analyze_partitions(databases.warehouse, run_partition_pairs(context))
    metrics = report.metrics
    regressions = [
        f"{row.pattern_id} {row.version} ({row.window_start}): {', '.join(json.loads(row.regressions))}"
        for row in metrics.itertuples()
        if json.loads(row.regressions)
    ]
    return dg.MaterializeResult(
        metadata={
            "versions_analysed": len(metrics),
            "executions": int(metrics["executions"].sum()) if len(metrics) else 0,
            "regressions": dg.MetadataValue.md(
                "\n".join(f"- {r}" for r in regressions) if regressions else "No significant regressions."
            ),
            "metrics": table_metadata(metrics[SHOWN_COLUMNS] if len(metrics) else pd.DataFrame(columns=SHOWN_COLUMNS)),
        }
    )
