"""`pattern_analysis`: metrics per pattern version over the trailing window, with regressions."""

import json

import dagster as dg
import pandas as pd

from feedback_loop_dagster.defs.code_location.partitions import pattern_window_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.collect.assets import feedback_dataset
from feedback_loop_dagster.defs.per_partition.loop import each_pattern
from feedback_loop_dagster.defs.per_partition.metadata import report_partitions, table_metadata
from feedback_loop_dagster.lib.analyze.analysis import analyze_pattern
from feedback_loop_dagster.lib.registry.policies import get_policy

SHOWN_COLUMNS = [
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


def _analyze(conn, partitions) -> list[pd.DataFrame]:
    first = partitions[0]
    windows = [p.window for p in partitions]
    metrics = analyze_pattern(conn, first.key, first.pattern_id, windows, get_policy(conn, first.pattern_id))
    return [metrics[metrics["window_start"] == window] for window in windows]


def _figures(outcome) -> dict:
    metrics: pd.DataFrame = outcome.value
    # the rows as bulk_insert wrote them, JSON documents as text
    regressions = [
        f"{row.version}: {', '.join(json.loads(row.regressions))}" for row in metrics.itertuples() if json.loads(row.regressions)
    ]
    return {
        "versions_analysed": len(metrics),
        "executions": int(metrics["executions"].sum()),
        "regressions": dg.MetadataValue.md(
            "\n".join(f"- {r}" for r in regressions) if regressions else "No significant regressions."
        ),
        "metrics": table_metadata(metrics[SHOWN_COLUMNS]),
    }


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
    Each pattern's windows are analysed from one read of its feedback.
    """
    outcomes = each_pattern(context, databases.warehouse, "pattern_analysis", _analyze)
    report_partitions(context, outcomes, _figures)
    return dg.MaterializeResult()
