"""`improvement_proposals`: evidence -> typed proposals with data-derived expected deltas."""

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from feedback_loop_dagster.defs.analyze.assets import pattern_analysis
from feedback_loop_dagster.defs.loop import per_partition
from feedback_loop_dagster.defs.metadata import table_metadata
from feedback_loop_dagster.defs.partitions import pattern_window_partitions, run_partition_pairs
from feedback_loop_dagster.defs.resources import FeedbackDatabases
from feedback_loop_dagster.lib.propose.proposals import propose
from feedback_loop_dagster.lib.registry.policies import get_policy
from feedback_loop_dagster.lib.storage import tables

SHOWN = ["id", "pattern_id", "kind", "title", "metric", "expected_delta", "expected_delta_low",
         "expected_delta_high", "risk", "priority", "status", "patch"]


@dg.asset(
    deps=[pattern_analysis],
    partitions_def=pattern_window_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="propose",
    kinds={"python", "sql"},
)
def improvement_proposals(context: dg.AssetExecutionContext, databases: FeedbackDatabases) -> dg.MaterializeResult:
    """Proposals from the registered analyzers (reliability, performance, quality, custom), each
    with its evidence, expected delta and interval, risk, priority and, where the config has a
    knob for it, a JSON merge patch. An open proposal is not proposed again, nor one that an
    experiment rejected or rolled back on the same active version."""
    outcomes = per_partition(
        databases.warehouse,
        run_partition_pairs(context),
        lambda conn, pattern_id, window: propose(conn, pattern_id, window, get_policy(conn, pattern_id)),
    )
    ids = sorted({i for o in outcomes for i in o.created + o.seen_again})
    with databases.warehouse.connect() as conn:
        shown = pd.DataFrame(
            conn.execute(sa.select(*(tables.proposals.c[c] for c in SHOWN)).where(tables.proposals.c.id.in_(ids))).all(),
            columns=SHOWN,
        )
    return dg.MaterializeResult(
        metadata={
            "new_proposals": sum(len(o.created) for o in outcomes),
            "open_proposals_seen_again": sum(len(o.seen_again) for o in outcomes),
            "superseded": sum(o.superseded for o in outcomes),
            "already_tried": sum(len(o.already_tried) for o in outcomes),
            "proposals": table_metadata(shown.sort_values("priority", ascending=False)),
        }
    )
