"""Pattern lineage: the version graph as of a window, and its traversal (no Dagster here).

    from feedback_loop_dagster.lib.lineage import Lineage, lineage_graph

    graph = lineage_graph(conn, "code-review", as_of=date(2026, 3, 12))
    graph.get_lineage_path("v3"), graph.get_active("code-review"), graph.diff("v1", "v3")
    Lineage(engine).get_descendants("code-review@v1")
"""

from feedback_loop_dagster.lib.lineage.graph import (
    STATUS_MEANINGS,
    ConfigDiff,
    LineageEdge,
    LineageGraph,
    LineageNode,
    VersionStatus,
)
from feedback_loop_dagster.lib.lineage.load import LineageData, lineage_graph, load_lineage
from feedback_loop_dagster.lib.lineage.queries import Lineage
from feedback_loop_dagster.lib.lineage.render import layered_layout, mermaid
from feedback_loop_dagster.lib.registry.edges import ANCESTRY_EDGES, EVENT_EDGES

__all__ = [
    "ANCESTRY_EDGES",
    "EVENT_EDGES",
    "VersionStatus",
    "STATUS_MEANINGS",
    "ConfigDiff",
    "Lineage",
    "LineageData",
    "LineageEdge",
    "LineageGraph",
    "LineageNode",
    "layered_layout",
    "lineage_graph",
    "load_lineage",
    "mermaid",
]
