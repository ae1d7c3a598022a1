"""Pictures of a lineage graph: Mermaid source and a layered layout for the SVG (picture.py).

Both show at most `max_nodes` versions: the active and candidate ones and the newest others, so a
pattern with hundreds of versions still gives a readable picture (the tables list every one).
"""

from __future__ import annotations

import re
import unicodedata
from itertools import zip_longest

from feedback_loop_dagster.lib.lineage.graph import LineageEdge, LineageGraph, LineageNode, VersionStatus

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
    leading = [n.id for n in graph.nodes.values() if n.status in (VersionStatus.ACTIVE, VersionStatus.CANDIDATE)]
    context = [a.id for i in leading for a in reversed(graph.get_lineage_path(i)[:-1])]
    newest = sorted(graph.nodes, reverse=True)
    chosen: dict[int, None] = {}
    for node_id in leading + [i for pair in zip_longest(context, newest) for i in pair if i is not None]:
        if len(chosen) >= max_nodes:
            break
        chosen.setdefault(node_id)
    return [graph.nodes[i] for i in sorted(chosen)]


def _edge_label(edge: LineageEdge) -> str:
    details = [d for d in (edge.effect, f"p={edge.p_value:.2g}" if edge.p_value is not None else None) if d]
    return edge.edge_type + (f": {'; '.join(details)}" if details else "")


# Words Mermaid's flowchart grammar reads as keywords where a node id stands.
_MERMAID_KEYWORDS = {"end", "graph", "flowchart", "subgraph", "direction", "click", "call", "href", "style",
                     "class", "classdef", "linkstyle", "default", "interpolate"}
# Characters with a meaning inside a quoted Mermaid label: the quote ends it, `#` starts an entity
# code, `<` `&` are HTML, a leading backtick starts a markdown string. Brackets and pipes are text
# inside quotes (checked with mermaid 11's parser).
_MERMAID_SPECIAL = set('"#&<>`')


def visible_text(text: str) -> str:
    """`text` with its control and invisible characters (newlines, NUL, zero-width spaces, line
    separators) written as escapes (`\\n`, `\\x00`, `\\u200b`), so a name shows on one line as it is."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if ch != " " and unicodedata.category(ch)[0] in "CZ" else ch
        for ch in text
    )


def mermaid_text(text: str) -> str:
    """`text` safe inside a quoted Mermaid label: invisible characters as escapes (`visible_text`),
    quotes, `#`, `<`, `&` and backticks as entity codes (`#34;`), so a name can neither end the
    label nor start a statement (`click ... "javascript:"`) nor become HTML."""
    return "".join(f"#{ord(ch)};" if ch in _MERMAID_SPECIAL else ch for ch in visible_text(text))


def mermaid_ids(nodes: list[LineageNode], several_patterns: bool) -> dict[int, str]:
    """A Mermaid node id per version that reads as its label: `v3` for v3, `unversioned` for
    (unversioned), `code_review_v3` for code-review@v3 in a graph of several patterns. Characters
    an id cannot hold become `_`; a keyword or a clash gets a suffix (`end_`, `v3_2`)."""
    ids: dict[int, str] = {}
    taken: set[str] = set()
    for node in sorted(nodes, key=lambda n: n.id):
        label = f"{node.pattern_id}@{node.version}" if several_patterns else node.version
        base = re.sub(r"[^A-Za-z0-9_]+", "_", label).strip("_") or "version"
        if base[0].isdigit():
            base = f"v_{base}"
        if base.lower() in _MERMAID_KEYWORDS:
            base += "_"
        candidate, n = base, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate.lower())
        ids[node.id] = candidate
    return ids


def mermaid(graph: LineageGraph, max_nodes: int = 60) -> str:
    """Mermaid `flowchart` source: `from --edge_type--> to`, laid out right to left so that time
    runs left to right (parents and replaced versions sit left of their successors). Node ids
    read as their labels (`mermaid_ids`); every label is escaped (`mermaid_text`)."""
    nodes = shown_nodes(graph, max_nodes)
    several = len(graph.pattern_ids) > 1
    ids = mermaid_ids(nodes, several)
    lines = ["flowchart RL"]
    for n in nodes:
        usage = f"{n.usage_count} runs" + (f", {n.success_rate:.0%} ok" if n.success_rate is not None else "")
        title = f"{n.pattern_id}@{n.version}" if several else n.version
        lines.append(f'    {ids[n.id]}["{mermaid_text(title)}<br/>{n.status} · {mermaid_text(usage)}"]:::{n.status}')
    for e in graph.edges:
        if e.from_id in ids and e.to_id in ids:
            lines.append(f'    {ids[e.from_id]} {EDGE_STYLE[e.edge_type]}|"{mermaid_text(_edge_label(e))}"| {ids[e.to_id]}')
    for status in VersionStatus:
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
