"""`pattern_lineage`: the version graph of each pattern as of the window's end."""

from collections import defaultdict

import dagster as dg
import pandas as pd

from feedback_loop_dagster.defs.apply.assets import applied_improvements
from feedback_loop_dagster.defs.lineage.plot import lineage_png_markdown
from feedback_loop_dagster.defs.metadata import table_metadata
from feedback_loop_dagster.defs.plots import markdown_text
from feedback_loop_dagster.defs.partitions import pattern_window_partitions, run_partition_pairs
from feedback_loop_dagster.defs.resources import FeedbackDatabases
from feedback_loop_dagster.lib.lineage import STATUS_MEANINGS, LineageGraph, load_lineage, mermaid
from feedback_loop_dagster.lib.storage.pattern_keys import pattern_ids_for_keys

MERMAID_NOTE = (
    "Dagster shows Mermaid as its source; the picture in `graph` is the same graph. GitHub, GitLab and "
    "mermaid.live draw this source, as does `feedback-loop lineage PATTERN --format mermaid`."
)


def lineage_picture_metadata(pattern_id: str, graph: LineageGraph) -> dict[str, dg.MetadataValue]:
    """The pictures of one pattern's graph as of its window: `graph` (a PNG with the status
    legend) and `mermaid` (its Mermaid source, ids reading as the version names). They depend on
    the graph's versions, statuses and edges only (not on the window: the partition names it),
    so windows whose graphs agree can share them."""
    if not graph.versions(pattern_id):
        return {"graph": dg.MetadataValue.md("No versions yet."), "mermaid": dg.MetadataValue.md("No versions yet.")}
    title = pattern_id
    legend = "\n".join(f"- **{status}**: {meaning}" for status, meaning in STATUS_MEANINGS.items())
    return {
        "graph": dg.MetadataValue.md(f"{lineage_png_markdown(title, graph)}\n\n{legend}"),
        "mermaid": dg.MetadataValue.md(f"**{markdown_text(title)}**\n\n{MERMAID_NOTE}\n\n```mermaid\n{mermaid(graph)}\n```"),
    }


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
    decision, p-value, lift). Shown as tables, a picture of each pattern's graph and its Mermaid
    source. Pattern keys like `agent-planner-v2-be1c686d5091` stand for ids that are not safe
    partition keys: `pattern_id` in each materialization (and `feedback-loop patterns list`)
    gives the original id.

    Read-only: one load per pattern serves every window of a range run."""
    pairs = run_partition_pairs(context)
    ids = pattern_ids_for_keys(databases.warehouse, {k for k, _ in pairs})
    windows = defaultdict(list)
    for key, window in pairs:
        windows[ids[key]].append(window)
    summary, latest = [], {}
    with databases.warehouse.connect() as conn:
        for pattern_id in sorted(windows):
            data = load_lineage(conn, [pattern_id])
            for window in sorted(windows[pattern_id]):
                graph = data.graph(window)
                active = graph.get_active(pattern_id)
                own = graph.versions(pattern_id)
                summary.append(
                    {
                        "pattern_id": pattern_id,
                        "window": window.isoformat(),
                        "versions": len(own),
                        "active": active.version if active else None,
                        "candidates": ", ".join(n.version for n in own if n.status == "candidate"),
                        "edges": len(graph.edges),
                        "executions": sum(n.usage_count for n in own),
                    }
                )
            latest[pattern_id] = graph
    nodes = pd.DataFrame([{"window": str(g.as_of), **row} for g in latest.values() for row in g.node_rows()])
    edges = pd.DataFrame([{"window": str(g.as_of), **row} for g in latest.values() for row in g.edge_rows()])
    pictures = [lineage_picture_metadata(p, g) for p, g in latest.items()]
    return dg.MaterializeResult(
        metadata={
            "patterns": len(latest),
            "versions": int(sum(len(g.versions(p)) for p, g in latest.items())),
            "summary": table_metadata(pd.DataFrame(summary), limit=100),
            "nodes": table_metadata(nodes, limit=100),
            "edges": table_metadata(edges, limit=100),
            # one picture per pattern, each at its latest window in this run
            "graph": dg.MetadataValue.md("\n\n".join(p["graph"].value for p in pictures)),
            "mermaid": dg.MetadataValue.md("\n\n".join(p["mermaid"].value for p in pictures)),
        }
    )
