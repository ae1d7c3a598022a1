"""`applied_improvements`: promote, reject, queue for review, or roll back, per policy."""

from functools import partial

import dagster as dg
import pandas as pd

from feedback_loop_dagster.defs.code_location.clock import LoopClock
from feedback_loop_dagster.defs.code_location.partitions import pattern_window_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.per_partition.loop import each_partition
from feedback_loop_dagster.defs.per_partition.metadata import report_partitions, table_metadata
from feedback_loop_dagster.defs.validate.assets import ab_test_results
from feedback_loop_dagster.lib.apply.decisions import act_on_result
from feedback_loop_dagster.lib.experiment.experiments import experiments_as_of
from feedback_loop_dagster.lib.validate.ab_results import stored_result

CHANGES = ("promoted", "rejected", "inconclusive", "rolled_back", "queued_for_review", "confirmed")


def _step(conn, partition, now):
    actions = []
    for experiment in experiments_as_of(conn, partition.pattern_id, partition.window):
        result = stored_result(conn, experiment.id, partition.window)
        if result is not None:
            actions.append(act_on_result(conn, experiment, partition.window, result, now=now))
    return actions


def _figures(outcome) -> dict:
    actions = outcome.value
    changed = [a for a in actions if a.action in CHANGES]
    return {
        "changes": len(changed),
        "decisions": dg.MetadataValue.md(
            "\n".join(f"- **{a.action}** #{a.experiment_id}: {a.reason}" for a in changed)
            or "No change: every experiment is waiting for evidence."
        ),
        "actions": table_metadata(
            pd.DataFrame([{"experiment": a.experiment_id, "action": a.action, "reason": a.reason} for a in actions])
        ),
    }


@dg.asset(
    deps=[ab_test_results],
    partitions_def=pattern_window_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="apply",
    kinds={"python", "sql"},
)
def applied_improvements(
    context: dg.AssetExecutionContext, clock: LoopClock, databases: FeedbackDatabases
) -> dg.MaterializeResult:
    """Executes each experiment's verdict under its policy, one transaction per change: promote
    the treatment (`promoted_over`, then watch it against the replaced version), reject it, end
    it as inconclusive when its time or sample is up (control kept), queue it for review
    (`feedback-loop approve ID`), or roll a watched promotion back (`rolled_back_to`). Concluded
    experiments are never decided again. A watch starts no earlier than the window open at the
    `clock` resource's moment (default: the real clock)."""
    step = partial(_step, now=clock.simulated_now())
    outcomes = each_partition(context, databases.warehouse, "applied_improvements", step)
    report_partitions(context, outcomes, _figures)
    return dg.MaterializeResult()
