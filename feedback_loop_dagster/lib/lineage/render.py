"""Pictures of a lineage graph: Mermaid source and a layered layout for a small PNG.

Both show at most `max_nodes` versions: the active and candidate ones and the newest others, so a
pattern with hundreds of versions still gives a readable picture (the tables list every one).
"""

from __future__ import annotations

import re
from itertools import zip_longest

from feedback_loop_dagster.lib.lineage.graph import ACTIVE, CANDIDATE, STATUSES, LineageEdge, LineageGraph, LineageNode

STATUS_COLOURS = {
    "active": "#2e7d32",
    "candidate": "#1565c0",
    "rolled_back": "#c62828",
    "deprecated": "#9e9e9e",
    "archived": "#d7ccc8",
}
EDGE_STYLE = {  # mermaid arrow per edge type: ancestry solid, label moves dotted
    "derived_from": "-->",
    "merged_from": "==>",
    "inspired_by": "-.->",
    "promoted_over": "-.->",
    "rolled_back_to": "-.->",
    "replaced_by": "-.->",
}


def shown_nodes(graph: LineageGraph, max_nodes: int) -> list[LineageNode]:
    """At most `max_nodes` versions: the active and candidate ones, then, alternately, their
    lineage paths (nearest first) and the newest others."""
    leading = [n.id for n in graph.nodes.values() if n.status in (ACTIVE, CANDIDATE)]
    context = [a.id for i in leading for a in reversed(graph.get_lineage_path(i)[:-1])]
    newest = sorted(graph.nodes, reverse=True)
    chosen: dict[int, None] = {}
    for node_id in leading + [i for pair in zip_longest(context, newest) for i in pair if i is not None]:
        if len(chosen) >= max_nodes:
            break
        chosen.setdefault(node_id)
    return [graph.nodes[i] for i in sorted(chosen)]


def _edge_label(edge: LineageEdge) -> str:
    details = []
    if edge.p_value is not None:
        details.append(f"p={edge.p_value:.2g}")
    if edge.lift is not None:
        details.append(f"{edge.lift:+.1%}")
    return edge.edge_type + (f" {' '.join(details)}" if details else "")


def _mermaid_text(text: str) -> str:
    return re.sub(r'["<>{}\[\]|]', "_", text).replace("#", "no.")


def mermaid(graph: LineageGraph, max_nodes: int = 60) -> str:
    """Mermaid `flowchart` source: `from --edge_type--> to`, laid out right to left so that time
    runs left to right (parents and replaced versions sit left of their successors)."""
    nodes = shown_nodes(graph, max_nodes)
    ids = {n.id for n in nodes}
    several = len(graph.pattern_ids) > 1
    lines = ["flowchart RL"]
    for n in nodes:
        usage = f"{n.usage_count} runs" + (f", {n.success_rate:.0%} ok" if n.success_rate is not None else "")
        title = f"{n.pattern_id}@{n.version}" if several else n.version
        lines.append(f'    v{n.id}["{_mermaid_text(title)}<br/>{n.status} · {usage}"]:::{n.status}')
    for e in graph.edges:
        if e.from_id in ids and e.to_id in ids:
            lines.append(f'    v{e.from_id} {EDGE_STYLE[e.edge_type]}|"{_mermaid_text(_edge_label(e))}"| v{e.to_id}')
    for status in STATUSES:
        colour = STATUS_COLOURS[status]
        text = "#fff" if status in ("active", "candidate", "rolled_back") else "#000"
        lines.append(f"    classDef {status} fill:{colour},color:{text},stroke:#333")
    hidden = len(graph.nodes) - len(nodes)
    if hidden:
        lines.append(f"    %% {hidden} older version(s) not drawn")
    return "\n".join(lines)


def layered_layout(graph: LineageGraph, nodes: list[LineageNode]) -> dict[int, tuple[float, float]]:
    """x = ancestry depth (longest path from a root), y = rank within the layer by creation."""
    depth = graph.depths()
    layers: dict[int, list[int]] = {}
    for n in nodes:
        layers.setdefault(depth.get(n.id, 0), []).append(n.id)
    # Compress the layers actually drawn so hidden older versions leave no empty columns.
    order = {d: i for i, d in enumerate(sorted(layers))}
    positions = {}
    for d, members in layers.items():
        members.sort()
        for rank, node_id in enumerate(members):
            positions[node_id] = (float(order[d]), -float(rank) + (len(members) - 1) / 2.0)
    return positions
