"""`ab_test_results`: the engine's cumulative, always-valid result for every experiment."""

import dagster as dg

from feedback_loop_dagster.defs.code_location.partitions import pattern_window_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.experiment.assets import experiments
from feedback_loop_dagster.defs.per_partition.checks import PartitionCheck, partition_check_events, partition_check_spec
from feedback_loop_dagster.defs.per_partition.loop import each_partition
from feedback_loop_dagster.defs.per_partition.metadata import report_partitions
from feedback_loop_dagster.defs.per_partition.plots import lift_plot_markdown, markdown_text
from feedback_loop_dagster.lib.experiment.experiments import experiments_as_of
from feedback_loop_dagster.lib.report.experiment import (
    candidate_patch,
    experiment_title,
    headline,
    metric_lines,
    patch_text,
)
from feedback_loop_dagster.lib.stats.units import effect_in_unit
from feedback_loop_dagster.lib.validate.ab_results import evaluate_as_of, stored_results

SRM_CHECK = "sample_ratio_mismatch"


def _step(conn, partition):
    looks = []
    for experiment in experiments_as_of(conn, partition.pattern_id, partition.window):
        result = evaluate_as_of(conn, experiment, partition.window)
        looks.append((experiment, result, stored_results(conn, experiment.id, partition.window)))
    return looks


def _lift_plot(experiment, result, history) -> str | None:
    lead = result.lead_metric
    if not lead or not history:
        return None
    return lift_plot_markdown(
        experiment_title(experiment),
        lead,
        [h["window"] for h in history],
        [effect_in_unit(h["metrics"].get(lead) or {"metric": lead}) for h in history],
    )


def _metrics_markdown(result: dict) -> str:
    """One line per metric, primaries first: its effect and interval in its unit, p and n, and a
    guardrail's status with its bound and margin. Markdown rather than a table: Dagster widens a
    table to its content, and a table wider than the panel pushes every value off-screen."""
    return "\n".join(
        f"- **{m.metric}** ({m.role}): {m.effect}; p={m.p}; n={m.n}" + (f"; guardrail {m.guardrail}" if m.guardrail else "")
        for m in metric_lines(result)
    )


def _figures(outcome) -> dict:
    """What a person reads in five seconds first (per experiment: the verdict, the lead effect and
    its interval in the metric's unit, p, n, and what the candidate changed), then the lift plot
    (inline), every metric with its guardrail, and the engine's reason. Effect texts hold only
    metric names, numbers and units, so only version names need escaping."""
    looks = outcome.value
    figures: dict = {"experiments_evaluated": len(looks)}
    if looks:
        figures["verdict"] = dg.MetadataValue.md("\n".join(
            f"- {headline(e, h[-1], title=f'**{markdown_text(experiment_title(e))}**')}; "
            f"patch `{patch_text(candidate_patch(e)).replace('`', '')}`"
            for e, _, h in looks
        ))
    for e, r, h in looks:
        plot = _lift_plot(e, r, h)
        if plot:
            figures[f"lift #{e.id}"] = dg.MetadataValue.md(plot)
        figures[f"metrics #{e.id}"] = dg.MetadataValue.md(_metrics_markdown(h[-1]))
        figures[f"reason #{e.id}"] = dg.MetadataValue.text(r.reason)
    return figures


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
    group_name="experiment",
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
