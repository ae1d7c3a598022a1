"""`applied_improvements`: promote, reject, queue for review, or roll back, per policy."""

from functools import partial

import dagster as dg
import pandas as pd

from feedback_loop_dagster.defs.clock import LoopClockConfig
from feedback_loop_dagster.defs.loop import per_partition
from feedback_loop_dagster.defs.metadata import table_metadata
from feedback_loop_dagster.defs.partitions import pattern_window_partitions, run_partition_pairs
from feedback_loop_dagster.defs.resources import FeedbackDatabases
from feedback_loop_dagster.defs.validate.assets import ab_test_results
from feedback_loop_dagster.lib.apply.decisions import act_on_result
from feedback_loop_dagster.lib.experiment.experiments import experiments_as_of
from feedback_loop_dagster.lib.validate.ab_results import stored_result


def _step(conn, pattern_id, window, now):
    actions = []
    for experiment in experiments_as_of(conn, pattern_id, window):
        result = stored_result(conn, experiment.id, window)
        if result is not None:
            actions.append(act_on_result(conn, experiment, window, result, now=now))
    return actions


@dg.asset(
    deps=[ab_test_results],
    partitions_def=pattern_window_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="apply",
    kinds={"python", "sql"},
)
def applied_improvements(
    context: dg.AssetExecutionContext, config: LoopClockConfig, databases: FeedbackDatabases
) -> dg.MaterializeResult:
    """Executes each experiment's verdict under its policy, one transaction per change: promote
    the treatment (`promoted_over`, then watch it against the replaced version), reject it, end
    it as inconclusive when its time or sample is up (control kept), queue it for review (`feedback-loop approve ID`), or roll a watched promotion back
    (`rolled_back_to`). Concluded experiments are never decided again. A watch starts no
    earlier than the window open at `config.now` (default: the real clock)."""
    step = partial(_step, now=config.simulated_now())
    actions = [a for acts in per_partition(databases.warehouse, run_partition_pairs(context), step) for a in acts]
    frame = pd.DataFrame(
        [{"experiment": a.experiment_id, "pattern_id": a.pattern_id, "window": a.window.isoformat(),
          "action": a.action, "reason": a.reason} for a in actions]
    )
    changed = [
        a for a in actions
        if a.action in ("promoted", "rejected", "inconclusive", "rolled_back", "queued_for_review", "confirmed")
    ]
    return dg.MaterializeResult(
        metadata={
            "changes": len(changed),
            "decisions": dg.MetadataValue.md(
                "\n".join(f"- **{a.action}** #{a.experiment_id} {a.pattern_id} ({a.window}): {a.reason}" for a in changed)
                or "No change: every experiment is waiting for evidence."
            ),
            "actions": table_metadata(frame),
        }
    )
