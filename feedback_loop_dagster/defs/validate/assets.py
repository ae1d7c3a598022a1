"""`ab_test_results`: the engine's cumulative, always-valid result for every experiment."""

import dagster as dg
import pandas as pd

from feedback_loop_dagster.defs.experiment.assets import experiments
from feedback_loop_dagster.defs.loop import per_partition
from feedback_loop_dagster.defs.metadata import table_metadata
from feedback_loop_dagster.defs.partitions import pattern_window_partitions, run_partition_pairs
from feedback_loop_dagster.defs.plots import lift_plot_markdown
from feedback_loop_dagster.defs.resources import FeedbackDatabases
from feedback_loop_dagster.lib.experiment.experiments import experiments_as_of
from feedback_loop_dagster.lib.validate.ab_results import evaluate_as_of, stored_results

SRM_CHECK = "sample_ratio_mismatch"
MAX_PLOTS = 4


def _step(conn, pattern_id, window):
    looks = []
    for experiment in experiments_as_of(conn, pattern_id, window):
        result = evaluate_as_of(conn, experiment, window)
        looks.append((experiment, window, result, stored_results(conn, experiment.id, window)))
    return looks


def _metric_rows(experiment, window, result) -> list[dict]:
    return [
        {
            "experiment": experiment.id,
            "pattern_id": experiment.pattern_id,
            "window": window.isoformat(),
            "metric": m.metric,
            "role": m.role,
            "control": f"{experiment.control.version} n={m.n_control} mean={m.mean_control:.4g}",
            "treatment": f"{experiment.treatment.version} n={m.n_treatment} mean={m.mean_treatment:.4g}",
            "improvement": m.relative_improvement,
            "ci_low": m.relative_improvement_ci_lower,
            "ci_high": m.relative_improvement_ci_upper,
            "p_value": m.p_value,
            "guardrail": m.guardrail_status,
            "verdict": result.recommendation,
        }
        for m in result.metrics.values()
    ]


@dg.asset(
    deps=[experiments],
    partitions_def=pattern_window_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="validate",
    kinds={"python", "sql"},
    check_specs=[
        dg.AssetCheckSpec(
            SRM_CHECK,
            asset="ab_test_results",
            description="Arms' execution counts match the planned split (chi-square p >= 0.001).",
        )
    ],
)
def ab_test_results(context: dg.AssetExecutionContext, databases: FeedbackDatabases) -> dg.MaterializeResult:
    """For each experiment with data in the window: the always-valid sequential result on its
    cumulative data from its start to the window's end (per metric: arms, effect, interval,
    p-value, guardrail status), and the lift of its primary metric over time."""
    looks = [look for looks in per_partition(databases.warehouse, run_partition_pairs(context), _step) for look in looks]
    rows = [row for experiment, window, result, _ in looks for row in _metric_rows(experiment, window, result)]
    summary = pd.DataFrame(
        [
            {
                "experiment": e.id,
                "pattern_id": e.pattern_id,
                "kind": e.kind,
                "window": w.isoformat(),
                "verdict": r.recommendation,
                "reason": r.reason,
                "p_value": r.p_value,
                "confidence_score": r.confidence_score,
                "performance_delta": r.performance_delta,
                "n_control": r.n_control,
                "n_treatment": r.n_treatment,
                "srm_p_value": r.srm_p_value,
            }
            for e, w, r, _ in looks
        ]
    )
    latest = {}
    for experiment, window, result, history in looks:
        latest[experiment.id] = (experiment, result, history)
    plots = []
    for experiment, result, history in list(latest.values())[:MAX_PLOTS]:
        lead = result.lead_metric
        if not lead or not history:
            continue
        series = [h["metrics"].get(lead, {}) for h in history]
        plots.append(
            lift_plot_markdown(
                f"#{experiment.id} {experiment.pattern_id}: {lead} ({experiment.treatment.version} vs {experiment.control.version})",
                [h["window"] for h in history],
                [s.get("relative_improvement") for s in series],
                [s.get("relative_improvement_ci_lower") for s in series],
                [s.get("relative_improvement_ci_upper") for s in series],
            )
        )
    mismatched = summary[summary["srm_p_value"] < 0.001] if len(summary) else summary
    return dg.MaterializeResult(
        metadata={
            "experiments_evaluated": len(latest),
            "results": table_metadata(summary),
            "metrics": table_metadata(pd.DataFrame(rows), limit=100),
            "lift_over_time": dg.MetadataValue.md("\n\n".join(plots) if plots else "No running experiment."),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=SRM_CHECK,
                passed=mismatched.empty,
                severity=dg.AssetCheckSeverity.ERROR,
                description=(
                    "every experiment's split matches its plan"
                    if mismatched.empty
                    else f"{len(mismatched)} result(s) with a sample-ratio mismatch: no decision on them"
                ),
                metadata={"mismatched": table_metadata(mismatched)},
            )
        ],
    )
