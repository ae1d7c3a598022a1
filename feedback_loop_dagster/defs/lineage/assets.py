"""`pattern_lineage`: the version graph of each pattern as of the window's end."""

import dagster as dg
import pandas as pd

from feedback_loop_dagster.defs.apply.assets import applied_improvements
from feedback_loop_dagster.defs.lineage.plot import lineage_png_markdown
from feedback_loop_dagster.defs.loop import each_pattern
from feedback_loop_dagster.defs.metadata import report_partitions, table_metadata
from feedback_loop_dagster.defs.partitions import pattern_window_partitions
from feedback_loop_dagster.defs.resources import FeedbackDatabases
from feedback_loop_dagster.lib.lineage import STATUS_MEANINGS, LineageGraph, load_lineage, mermaid

LEGEND = "\n".join(f"- **{status}**: {meaning}" for status, meaning in STATUS_MEANINGS.items())


def _graphs(conn, partitions) -> list[LineageGraph]:
    # Read-only: one load per pattern serves every window of the run.
    data = load_lineage(conn, [partitions[0].pattern_id])
    return [data.graph(p.window) for p in partitions]


def _drawn(graph: LineageGraph) -> tuple:
    """What the picture shows (versions with their status, edges with their p-value): windows whose
    graphs agree on it share one rendering."""
    return (
        tuple(sorted((n.id, n.version, n.status) for n in graph.nodes.values())),
        tuple(sorted((e.from_id, e.to_id, e.edge_type, e.p_value) for e in graph.edges)),
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
    decision, p-value, lift). Shown as tables, Mermaid source and a small picture."""
    outcomes = each_pattern(context, databases.warehouse, "pattern_lineage", _graphs)
    pictures: dict[tuple, str] = {}

    def figures(outcome) -> dict:
        graph: LineageGraph = outcome.value
        pattern_id = outcome.partition.pattern_id
        own = graph.versions(pattern_id)
        active = graph.get_active(pattern_id)
        figures = {
            "versions": len(own),
            "active": active.version if active else "none",
            "candidates": ", ".join(n.version for n in own if n.status == "candidate") or "none",
            "executions": sum(n.usage_count for n in own),
            "nodes": table_metadata(pd.DataFrame(graph.node_rows()), limit=100),
            "edges": table_metadata(pd.DataFrame(graph.edge_rows()), limit=100),
        }
        if not len(graph):
            return {**figures, "graph": dg.MetadataValue.md("No versions yet.")}
        drawn = (pattern_id, _drawn(graph))
        if drawn not in pictures:
            pictures[drawn] = lineage_png_markdown(pattern_id, graph)
        return {
            **figures,
            "graph": dg.MetadataValue.md(f"{pictures[drawn]}\n\n{LEGEND}"),
            "mermaid": dg.MetadataValue.md(f"```mermaid\n{mermaid(graph)}\n```"),
        }

    report_partitions(context, outcomes, figures)
    return dg.MaterializeResult()
