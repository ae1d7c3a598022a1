"""`improvement_proposals`: evidence -> typed proposals with data-derived expected deltas."""

import dagster as dg

from feedback_loop_dagster.defs.analyze.assets import pattern_analysis
from feedback_loop_dagster.defs.code_location.partitions import pattern_window_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.per_partition.loop import each_partition
from feedback_loop_dagster.defs.per_partition.metadata import report_partitions, table_metadata
from feedback_loop_dagster.lib.propose.proposals import proposals_by_id, propose
from feedback_loop_dagster.lib.registry.policies import get_policy
from feedback_loop_dagster.lib.stats.units import format_change, improvement_in_unit

SHOWN = ["id", "kind", "title", "metric", "expected_delta", "expected_delta_low", "expected_delta_high", "risk",
         "priority", "status", "patch"]
SHOWN_COLUMNS = ["id", "kind", "title", "metric", "expected", "risk", "priority", "status", "patch"]


@dg.asset(
    deps=[pattern_analysis],
    partitions_def=pattern_window_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="analyze",
    kinds={"python", "sql"},
)
def improvement_proposals(context: dg.AssetExecutionContext, databases: FeedbackDatabases) -> dg.MaterializeResult:
    """Proposals from the registered analyzers (reliability, performance, quality, custom), each
    with its evidence, expected delta and interval, risk, priority and, where the config has a
    knob for it, a JSON merge patch. An open proposal is not proposed again, nor one that an
    experiment rejected or rolled back on the same active version."""
    outcomes = each_partition(
        context,
        databases.warehouse,
        "improvement_proposals",
        lambda conn, p: propose(conn, p.pattern_id, p.window, get_policy(conn, p.pattern_id)),
    )
    ids = sorted({i for o in outcomes if o.ok for i in o.value.created + o.value.seen_again})
    with databases.warehouse.connect() as conn:
        shown = proposals_by_id(conn, ids, SHOWN)

    def figures(outcome) -> dict:
        proposed = outcome.value
        mine = shown.loc[proposed.created + proposed.seen_again].sort_values("priority", ascending=False)
        # the expected change in the metric's unit, as the A/B result will report it
        expected = [
            format_change(m, *(improvement_in_unit(m, v) for v in (d, lo, hi)))
            for m, d, lo, hi in zip(mine.metric, mine.expected_delta, mine.expected_delta_low, mine.expected_delta_high, strict=True)
        ]
        mine = mine.drop(columns=["expected_delta", "expected_delta_low", "expected_delta_high"]).assign(expected=expected)
        return {
            "new_proposals": len(proposed.created),
            "open_proposals_seen_again": len(proposed.seen_again),
            "superseded": proposed.superseded,
            "already_tried": len(proposed.already_tried),
            "proposals": table_metadata(mine[SHOWN_COLUMNS]),
        }

    report_partitions(context, outcomes, figures)
    return dg.MaterializeResult()
