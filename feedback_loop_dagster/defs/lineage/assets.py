"""`pattern_lineage`: the version graph of each pattern as of the window's end."""

import dagster as dg
import pandas as pd

from feedback_loop_dagster.defs.apply.assets import applied_improvements
from feedback_loop_dagster.defs.code_location.partitions import pattern_window_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.lineage.plot import lineage_picture_markdown
from feedback_loop_dagster.defs.per_partition.loop import each_pattern
from feedback_loop_dagster.defs.per_partition.metadata import report_partitions, table_metadata
from feedback_loop_dagster.defs.per_partition.plots import markdown_text
from feedback_loop_dagster.lib.lineage import STATUS_MEANINGS, LineageGraph, load_lineage, mermaid

MERMAID_NOTE = (
    "Dagster shows Mermaid as its source; the picture in `graph` is the same graph. GitHub, GitLab and "
    "mermaid.live draw this source, as does `feedback-loop lineage PATTERN --format mermaid`."
)


def lineage_picture_metadata(pattern_id: str, graph: LineageGraph) -> dict[str, dg.MetadataValue]:
    """The pictures of one pattern's graph as of its window: `graph` (an SVG with the status
    legend) and `mermaid` (its Mermaid source, ids reading as the version names). They depend on
    the graph's versions, statuses and edges only (not on the window: the partition names it),
    so windows whose graphs agree can share them."""
    if not graph.versions(pattern_id):
        return {"graph": dg.MetadataValue.md("No versions yet."), "mermaid": dg.MetadataValue.md("No versions yet.")}
    title = pattern_id
    legend = "\n".join(f"- **{status}**: {meaning}" for status, meaning in STATUS_MEANINGS.items())
    return {
        "graph": dg.MetadataValue.md(f"{lineage_picture_markdown(title, graph)}\n\n{legend}"),
        "mermaid": dg.MetadataValue.md(f"**{markdown_text(title)}**\n\n{MERMAID_NOTE}\n\n```mermaid\n{mermaid(graph)}\n```"),
    }


def _graphs(conn, partitions) -> list[LineageGraph]:
    # Read-only: one load per pattern serves every window of the run.
    data = load_lineage(conn, [partitions[0].pattern_id])
    return [data.graph(p.window) for p in partitions]


def _drawn(graph: LineageGraph) -> tuple:
    """What the pictures show (versions with their status, edges with their evidence): windows whose
    graphs agree on it share one rendering."""
    return (
        tuple(sorted((n.id, n.version, n.status) for n in graph.nodes.values())),
        tuple(sorted((e.from_id, e.to_id, e.edge_type, e.p_value, e.effect_brief or "") for e in graph.edges)),
    )


@dg.asset(
    deps=[applied_improvements],
    partitions_def=pattern_window_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="lineage",
    kinds={"python", "sql"},
)
def pattern_lineage(context: dg.AssetExecutionContext, databases: FeedbackDatabases) -> dg.MaterializeResult:
    """How each pattern's versions evolved, as of the end of the window: every version with its
    status (active, candidate, rolled_back, deprecated, archived), source, creation time and its
    executions and success rate in the window; every edge (derived_from, merged_from,
    inspired_by, promoted_over, rolled_back_to, replaced_by) with its evidence (experiment,
    decision, p-value, lift). Shown as tables, a picture of the pattern's graph and its Mermaid
    source. Pattern keys like `agent-planner-v2-be1c686d5091` stand for ids that are not safe
    partition keys: `pattern_id` in each materialization (and `feedback-loop patterns list`)
    gives the original id."""
    outcomes = each_pattern(context, databases.warehouse, "pattern_lineage", _graphs)
    pictures: dict[tuple, dict[str, dg.MetadataValue]] = {}

    def figures(outcome) -> dict:
        graph: LineageGraph = outcome.value
        pattern_id = outcome.partition.pattern_id
        own = graph.versions(pattern_id)
        active = graph.get_active(pattern_id)
        drawn = (pattern_id, _drawn(graph))
        if drawn not in pictures:
            pictures[drawn] = lineage_picture_metadata(pattern_id, graph)
        return {
            "versions": len(own),
            "active": active.version if active else "none",
            "candidates": ", ".join(n.version for n in own if n.status == "candidate") or "none",
            "executions": sum(n.usage_count for n in own),
            "nodes": table_metadata(pd.DataFrame(graph.node_rows()), limit=100),
            "edges": table_metadata(pd.DataFrame(graph.edge_rows()), limit=100),
            **pictures[drawn],
        }

    report_partitions(context, outcomes, figures)
    return dg.MaterializeResult()
