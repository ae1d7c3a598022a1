"""Metrics of each pattern version over a trailing period, compared with the period before.

A metric is flagged as a regression only when the engine's test finds the current period
significantly worse than the previous one. This compares two fixed periods once per window, so
it uses the engine's fixed-horizon test and says so; it is a monitoring signal, not a decision.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from feedback_loop_dagster.lib.stats import ArmStats, Policy, evaluate_metric
from feedback_loop_dagster.lib.storage.tables import pattern_metrics

TOP_ERRORS = 5
COMPARED_METRICS = ("success", "latency", "quality", "rating", "retries")


def version_metrics(rows: pd.DataFrame, stats: ArmStats) -> dict[str, Any]:
    """Volume, success rate, latency quantiles and geometric mean, quality, rating, retries, top
    errors (as text: the row is bulk-inserted, which bypasses the column type's encoding)."""
    durations = rows["duration_ms"].dropna()
    durations = durations[durations > 0]
    quantiles = durations.quantile([0.5, 0.95, 0.99]) if len(durations) else pd.Series([np.nan] * 3, index=[0.5, 0.95, 0.99])
    failed = rows[(rows["status"] != "success") & (rows["status"] != "in_progress")]
    error_class = failed["error_type"].where(failed["error_type"].notna(), failed["status"])
    return {
        "executions": int(stats.executions),
        "success_rate": _mean(stats.success),
        "latency_p50": _float(quantiles[0.5]),
        "latency_p95": _float(quantiles[0.95]),
        "latency_p99": _float(quantiles[0.99]),
        "latency_geomean": stats.latency.geometric_mean if stats.latency is not None and stats.latency.n else None,
        "quality_mean": _mean(stats.quality),
        "rating_mean": _mean(stats.rating),
        "retries_mean": _mean(stats.retries),
        "top_errors": pattern_metrics.c.top_errors.type.dumps(error_class.value_counts().head(TOP_ERRORS).to_dict()),
    }


def compare_periods(previous: ArmStats, current: ArmStats, policy: Policy) -> tuple[dict[str, Any], list[str]]:
    """Per metric: the change from the previous period, and the metrics that significantly regressed."""
    fixed = policy.model_copy(update={"test_method": "fixed_horizon"})
    comparison: dict[str, Any] = {}
    regressions = []
    for metric in COMPARED_METRICS:
        before, after = previous.get(metric), current.get(metric)
        if before is None or after is None or before.n < 2 or after.n < 2:
            continue
        result = evaluate_metric(metric, before, after, fixed, role="primary")
        comparison[metric] = {
            "previous": result.mean_control,
            "current": result.mean_treatment,
            "relative_improvement": result.relative_improvement,
            "p_value": result.p_value,
            "regression": result.significant_harm,
            "test": result.method,
        }
        if result.significant_harm:
            regressions.append(metric)
    return comparison, regressions


def _mean(stats: Any) -> float | None:
    return float(stats.mean) if stats is not None and stats.n else None


def _float(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)
