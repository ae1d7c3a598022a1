"""`experiments`: candidate versions derived from proposals, and the experiments running them."""

from functools import partial

import dagster as dg
import pandas as pd

from feedback_loop_dagster.defs.code_location.clock import LoopClock
from feedback_loop_dagster.defs.code_location.partitions import pattern_window_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.per_partition.loop import each_partition
from feedback_loop_dagster.defs.per_partition.metadata import report_partitions, table_metadata
from feedback_loop_dagster.defs.propose.assets import improvement_proposals
from feedback_loop_dagster.lib.experiment.experiments import experiments_as_of, start_from_proposal
from feedback_loop_dagster.lib.registry.policies import get_policy


def _step(conn, partition, now):
    policy = get_policy(conn, partition.pattern_id)
    started = start_from_proposal(conn, partition.pattern_id, partition.window, policy, now=now)
    return started, experiments_as_of(conn, partition.pattern_id, partition.window)


def _figures(outcome) -> dict:
    started, running = outcome.value
    rows = [
        {
            "experiment": e.id,
            "kind": e.kind,
            "control": e.control.version,
            "treatment": e.treatment.version,
            "treatment_share": e.traffic_split,
            "start_window": e.start_window.isoformat(),
            "status": e.status,
            "outcome": e.outcome,
        }
        for e in running
    ]
    return {
        "started": int(started is not None),
        "started_experiment": dg.MetadataValue.md(
            f"#{started.id}: {started.treatment.version} vs {started.control.version} "
            f"(split {started.traffic_split:.0%}), from {started.start_window}"
            if started is not None
            else "None."
        ),
        "experiments": table_metadata(pd.DataFrame(rows)),
    }


@dg.asset(
    deps=[improvement_proposals],
    partitions_def=pattern_window_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="experiment",
    kinds={"python", "sql"},
)
def experiments(
    context: dg.AssetExecutionContext, clock: LoopClock, databases: FeedbackDatabases
) -> dg.MaterializeResult:
    """When the policy enables A/B testing, no experiment runs for the pattern and a proposal
    carries a patch: a candidate version (`derived_from` the active one) and an experiment
    against it, from the next window, with the policy's split. Route traffic with
    `feedback_loop_dagster.lib.experiment.assignment.assign_variant`.

    An experiment never starts on a window that is already complete when it is created (its
    executions ran without the split): run over past windows (a backfill, a re-materialisation),
    it starts in the window open now. The `clock` resource replaces the real clock for simulations."""
    step = partial(_step, now=clock.simulated_now())
    outcomes = each_partition(context, databases.warehouse, "experiments", step)
    report_partitions(context, outcomes, _figures)
    return dg.MaterializeResult()
