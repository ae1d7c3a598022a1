"""`experiments`: candidate versions derived from proposals, and the experiments running them."""

from functools import partial

import dagster as dg
import pandas as pd

from feedback_loop_dagster.defs.clock import LoopClockConfig
from feedback_loop_dagster.defs.loop import per_partition
from feedback_loop_dagster.defs.metadata import table_metadata
from feedback_loop_dagster.defs.partitions import pattern_window_partitions, run_partition_pairs
from feedback_loop_dagster.defs.propose.assets import improvement_proposals
from feedback_loop_dagster.defs.resources import FeedbackDatabases
from feedback_loop_dagster.lib.experiment.experiments import experiments_as_of, start_from_proposal
from feedback_loop_dagster.lib.registry.policies import get_policy


def _step(conn, pattern_id, window, now):
    started = start_from_proposal(conn, pattern_id, window, get_policy(conn, pattern_id), now=now)
    return started, experiments_as_of(conn, pattern_id, window)


@dg.asset(
    deps=[improvement_proposals],
    partitions_def=pattern_window_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="experiment",
    kinds={"python", "sql"},
)
def experiments(
    context: dg.AssetExecutionContext, config: LoopClockConfig, databases: FeedbackDatabases
) -> dg.MaterializeResult:
    """When the policy enables A/B testing, no experiment runs for the pattern and a proposal
    carries a patch: a candidate version (`derived_from` the active one) and an experiment
    against it, from the next window, with the policy's split. Route traffic with
    `feedback_loop_dagster.lib.experiment.assignment.assign_variant`.

    An experiment never starts on a window that is already complete when it is created (its
    executions ran without the split): run over past windows (a backfill, a re-materialisation),
    it starts in the window open now. `config.now` replaces the real clock for simulations."""
    now = config.simulated_now()
    outcomes = per_partition(databases.warehouse, run_partition_pairs(context), partial(_step, now=now))
    rows = [
        {
            "experiment": e.id,
            "pattern_id": e.pattern_id,
            "kind": e.kind,
            "control": e.control.version,
            "treatment": e.treatment.version,
            "treatment_share": e.traffic_split,
            "start_window": e.start_window.isoformat(),
            "status": e.status,
            "outcome": e.outcome,
        }
        for _, running in outcomes
        for e in running
    ]
    started = [s for s, _ in outcomes if s is not None]
    return dg.MaterializeResult(
        metadata={
            "started": len(started),
            "started_experiments": dg.MetadataValue.md(
                "\n".join(f"- #{s.id} {s.pattern_id}: {s.treatment.version} vs {s.control.version} "
                          f"(split {s.traffic_split:.0%}), from {s.start_window}" for s in started) or "None."
            ),
            "experiments": table_metadata(pd.DataFrame(rows).drop_duplicates() if rows else pd.DataFrame()),
        }
    )
