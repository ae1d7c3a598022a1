"""`ab_test_results`: the engine's cumulative, always-valid result for every experiment."""

import dagster as dg
import pandas as pd

from feedback_loop_dagster.defs.code_location.partitions import pattern_window_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.experiment.assets import experiments
from feedback_loop_dagster.defs.per_partition.checks import PartitionCheck, partition_check_events, partition_check_spec
from feedback_loop_dagster.defs.per_partition.loop import each_partition
from feedback_loop_dagster.defs.per_partition.metadata import report_partitions, table_metadata
from feedback_loop_dagster.defs.per_partition.plots import lift_plot_markdown
from feedback_loop_dagster.lib.experiment.experiments import experiments_as_of
from feedback_loop_dagster.lib.validate.ab_results import evaluate_as_of, stored_results

SRM_CHECK = "sample_ratio_mismatch"


def _step(conn, partition):
    looks = []
    for experiment in experiments_as_of(conn, partition.pattern_id, partition.window):
        result = evaluate_as_of(conn, experiment, partition.window)
        looks.append((experiment, result, stored_results(conn, experiment.id, partition.window)))
    return looks


def _metric_rows(experiment, result) -> list[dict]:
    return [
        {
            "experiment": experiment.id,
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


def _lift_plot(experiment, result, history) -> str | None:
    lead = result.lead_metric
    if not lead or not history:
        return None
    series = [h["metrics"].get(lead, {}) for h in history]
    return lift_plot_markdown(
        f"#{experiment.id} {experiment.pattern_id}: {lead} ({experiment.treatment.version} vs {experiment.control.version})",
        [h["window"] for h in history],
        [s.get("relative_improvement") for s in series],
        [s.get("relative_improvement_ci_lower") for s in series],
        [s.get("relative_improvement_ci_upper") for s in series],
    )


def _figures(outcome) -> dict:
    looks = outcome.value
    summary = pd.DataFrame(
        [
            {
                "experiment": e.id,
                "kind": e.kind,
                "verdict": r.recommendation,
                "reason": r.reason,
                "p_value": r.p_value,
                "confidence_score": r.confidence_score,
                "performance_delta": r.performance_delta,
                "n_control": r.n_control,
                "n_treatment": r.n_treatment,
                "srm_p_value": r.srm_p_value,
            }
            for e, r, _ in looks
        ]
    )
    plots = [plot for plot in (_lift_plot(e, r, h) for e, r, h in looks) if plot]
    return {
        "experiments_evaluated": len(looks),
        "results": table_metadata(summary),
        "metrics": table_metadata(pd.DataFrame([row for e, r, _ in looks for row in _metric_rows(e, r)]), limit=100),
        "lift_over_time": dg.MetadataValue.md("\n\n".join(plots) if plots else "No running experiment."),
    }


def _srm_check(outcome) -> PartitionCheck:
    mismatched = [(e, r) for e, r, _ in outcome.value if not r.srm_passed]
    return PartitionCheck(
        outcome.partition.dagster_key,
        not mismatched,
        (
            "every experiment's split matches its plan"
            if not mismatched
            else "; ".join(f"#{e.id}: sample-ratio mismatch (p={r.srm_p_value:.2g}), no decision on it" for e, r in mismatched)
        ),
        {"srm_p_values": {str(e.id): r.srm_p_value for e, r, _ in outcome.value}},
    )


@dg.asset(
    deps=[experiments],
    partitions_def=pattern_window_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="validate",
    kinds={"python", "sql"},
    check_specs=[
        partition_check_spec(
            SRM_CHECK,
            "ab_test_results",
            "Arms' execution counts match the planned split (chi-square p >= the policy's srm_threshold, "
            "0.001 by default); evaluated for the partitions with an experiment.",
        )
    ],
)
def ab_test_results(context: dg.AssetExecutionContext, databases: FeedbackDatabases):
    """For each experiment with data in the window: the always-valid sequential result on its
    cumulative data from its start to the window's end (per metric: arms, effect, interval,
    p-value, guardrail status), and the lift of its primary metric over time."""
    outcomes = each_partition(context, databases.warehouse, "ab_test_results", _step)
    report_partitions(context, outcomes, _figures)
    yield dg.MaterializeResult()
    yield from partition_check_events(context, SRM_CHECK, (_srm_check(o) for o in outcomes if o.ok and o.value))
