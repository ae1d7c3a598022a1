"""The version graph of one or more patterns, in memory, and its traversal.

Edges read `from --type--> to`, as stored in `lineage_edges`:

- ancestry (where a version came from; a DAG, cycles are refused when written):
  `X derived_from Y` (Y is X's parent), `X merged_from Y` (Y is merged into X: a second parent),
  `X inspired_by Y` (a looser ancestor, possibly of another pattern);
- events (how the `active` label moved; may revisit a version):
  `X promoted_over Y` (X replaced Y as active after an experiment),
  `X rolled_back_to Y` (X regressed while watched; Y is active again),
  `X replaced_by Y` (Y was made active by hand, without an experiment).

A version's `parent_id` counts as a `derived_from` edge, so a registry without explicit edges
still has its ancestry. Traversal is in memory over one load (see `load.py`), so a pattern with
hundreds of versions costs a handful of queries, never one per version.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from feedback_loop_dagster.lib.errors import NotFound
from feedback_loop_dagster.lib.registry.edges import ANCESTRY_EDGES
from feedback_loop_dagster.lib.registry.patch import diff_patch
from feedback_loop_dagster.lib.registry.versions import Version
from feedback_loop_dagster.lib.stats.metrics import METRICS
from feedback_loop_dagster.lib.stats.units import effect_in_unit, format_effect, format_in_unit, verdict_of

# The order in which a version's parents are tried for its primary parent (first-parent path).
_PRIMARY_ORDER = {"parent": 0, "derived_from": 1, "merged_from": 2, "inspired_by": 3}



class VersionStatus(StrEnum):
    """A version's status in the lineage graph as of its window. In order of precedence: a
    version has the first status that applies to it."""

    ACTIVE = "active"
    CANDIDATE = "candidate"
    ROLLED_BACK = "rolled_back"
    DEPRECATED = "deprecated"
    ARCHIVED = "archived"


STATUS_MEANINGS = {
    VersionStatus.ACTIVE: "the version the `active` label points at: the one serving traffic by default",
    VersionStatus.CANDIDATE: "the treatment of an A/B experiment running as of the window",
    VersionStatus.ROLLED_BACK: "was promoted, regressed while watched and was rolled back (and is not active again)",
    VersionStatus.DEPRECATED: "was active once and has since been replaced (promoted over or replaced by hand)",
    VersionStatus.ARCHIVED: "never active: a rejected or stopped candidate, or a registered version never promoted",
}


@dataclass(frozen=True)
class LineageNode(Version):
    """A version as of the graph's window: what it is, where it came from, how it is used."""

    status: str
    status_reason: str
    introduced: date | None  # first window the version shows up in
    usage_count: int  # executions in the graph's usage window
    success_rate: float | None  # success share of the finished ones among them
    usage_total: int  # executions up to the end of the usage window

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pattern_id": self.pattern_id,
            "version": self.version,
            "status": str(self.status),  # a plain string: Dagster metadata refuses enums
            "status_reason": self.status_reason,
            "parent_id": self.parent_id,
            "source": self.source,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "introduced": self.introduced.isoformat() if self.introduced else None,
            "proposal_id": self.proposal_id,
            "usage_count": self.usage_count,
            "success_rate": self.success_rate,
            "usage_total": self.usage_total,
            "config": self.config,
        }


@dataclass(frozen=True)
class LineageEdge:
    """`from --edge_type--> to` with its evidence (experiment, decision, p-value, effect).

    `lead_result` is the A/B engine's result for the lead metric at the look the decision was
    taken on (promotions and rollbacks by the loop), from which the effect is written in the
    metric's unit; `lift` is the seed contract's relative improvement, for JSON only."""

    id: int | None  # None for an edge implied by a version's parent_id
    from_id: int
    to_id: int
    edge_type: str
    window_start: date | None
    created_at: datetime | None
    decision_id: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    lead_result: dict[str, Any] | None = None

    @property
    def experiment_id(self) -> int | None:
        return self.evidence.get("experiment_id")

    @property
    def p_value(self) -> float | None:
        return self.evidence.get("p_value")

    @property
    def lift(self) -> float | None:
        """Relative improvement of the lead metric (positive = better), from the A/B result."""
        return self.evidence.get("performance_delta")

    @property
    def effect(self) -> str | None:
        """`success rate -10.6 pts [-18.2, -3.0], worse`: the lead metric's effect (treatment minus
        control, in its unit) at the decision, with its interval and, when significant, its verdict."""
        if not self.lead_result:
            return None
        return format_effect(self.lead_result, label=True, verdict=verdict_of(self.lead_result))

    @property
    def effect_brief(self) -> str | None:
        """`success rate -10.6 pts`: the effect alone, for a picture."""
        if not self.lead_result:
            return None
        metric = self.lead_result["metric"]
        return f"{METRICS[metric].label} {format_in_unit(metric, effect_in_unit(self.lead_result).value)}"

    @property
    def is_ancestry(self) -> bool:
        return self.edge_type in ANCESTRY_EDGES

    def summary(self) -> str:
        """A short human description of the evidence (the effect has its own column: `effect`)."""
        parts = []
        if self.experiment_id is not None:
            parts.append(f"exp #{self.experiment_id}")
        if self.decision_id is not None:
            parts.append(f"decision #{self.decision_id}")
        if self.p_value is not None:
            parts.append(f"p={self.p_value:.3g}")
        if self.evidence.get("proposal_id") is not None:
            parts.append(f"proposal #{self.evidence['proposal_id']}")
        if self.evidence.get("user"):
            parts.append(f"by {self.evidence['user']}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "from_id": self.from_id,
            "to_id": self.to_id,
            "edge_type": self.edge_type,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "decision_id": self.decision_id,
            "experiment_id": self.experiment_id,
            "p_value": self.p_value,
            "lift": self.lift,
            "effect": self.effect,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class ConfigDiff:
    """What changes from one version's config to another's.

    `patch` is the JSON merge patch (RFC 7386) that turns `before`'s config into `after`'s;
    `changes` lists each changed leaf as {path, before, after} (a missing value is None).
    """

    before: str
    after: str
    patch: dict[str, Any]
    changes: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "patch": self.patch, "changes": self.changes}


_MISSING = object()


def _changes(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(before.keys() | after.keys(), key=str):
            out += _changes(before.get(key, _MISSING), after.get(key, _MISSING), f"{path}.{key}" if path else str(key))
        return out
    if before == after:
        return []
    return [{"path": path, "before": None if before is _MISSING else before, "after": None if after is _MISSING else after}]


def config_diff(before: LineageNode, after: LineageNode) -> ConfigDiff:
    return ConfigDiff(before.label, after.label, diff_patch(before.config, after.config), _changes(before.config, after.config))


class LineageGraph:
    """Versions and edges of some patterns as of a window, with the traversal API.

    Version references (`ref`) may be a node or any object with an integer `id` (a registry
    `Version`), an id, a `(pattern_id, version)` pair, `"pattern@version"`, or a bare version name
    when it is unique in the graph.
    """

    def __init__(
        self,
        nodes: Iterable[LineageNode],
        edges: Iterable[LineageEdge],
        as_of: date | None = None,
        usage_window: date | None = None,
    ) -> None:
        self.as_of = as_of
        self.usage_window = usage_window
        self.nodes: dict[int, LineageNode] = {n.id: n for n in sorted(nodes, key=lambda n: n.id)}
        self._by_name = {(n.pattern_id, n.version): n.id for n in self.nodes.values()}
        explicit = [e for e in edges if e.from_id in self.nodes and e.to_id in self.nodes]
        derived = {(e.from_id, e.to_id) for e in explicit if e.edge_type == "derived_from"}
        implied = [
            LineageEdge(None, n.id, n.parent_id, "derived_from", n.introduced, n.created_at)
            for n in self.nodes.values()
            if n.parent_id in self.nodes and (n.id, n.parent_id) not in derived
        ]
        self.edges: list[LineageEdge] = sorted(
            explicit + implied, key=lambda e: (e.window_start or date.min, e.id if e.id is not None else -1, e.from_id)
        )
        self._parents: dict[int, list[tuple[int, int, str]]] = {i: [] for i in self.nodes}
        self._children: dict[int, list[int]] = {i: [] for i in self.nodes}
        for node in self.nodes.values():
            if node.parent_id in self.nodes:
                self._parents[node.id].append((_PRIMARY_ORDER["parent"], node.parent_id, "parent"))
        for edge in self.edges:
            if edge.is_ancestry and edge.id is not None:
                self._parents[edge.from_id].append((_PRIMARY_ORDER[edge.edge_type], edge.to_id, edge.edge_type))
        for child, parents in self._parents.items():
            parents.sort()
            for _, parent, _ in parents:
                if child not in self._children[parent]:
                    self._children[parent].append(child)

    # --- lookups -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, ref: object) -> bool:
        try:
            self.node(ref)
        except LookupError:
            return False
        return True

    @property
    def pattern_ids(self) -> list[str]:
        return sorted({n.pattern_id for n in self.nodes.values()})

    def node(self, ref: Any) -> LineageNode:
        """The node a reference names; LookupError with the reason when there is none."""
        if isinstance(ref, LineageNode):
            ref = ref.id
        elif not isinstance(ref, int | str | tuple) and isinstance(getattr(ref, "id", None), int):
            ref = ref.id
        if isinstance(ref, bool):
            raise NotFound(f"not a version reference: {ref!r}")
        if isinstance(ref, int):
            if ref in self.nodes:
                return self.nodes[ref]
            raise NotFound(f"no version with id {ref} in the lineage of {', '.join(map(repr, self.pattern_ids)) or 'no pattern'}")
        if isinstance(ref, tuple) and len(ref) == 2:
            found = self._by_name.get((ref[0], ref[1]))
            if found is None:
                raise NotFound(f"pattern {ref[0]!r} has no version {ref[1]!r}{self._as_of_note()}")
            return self.nodes[found]
        if isinstance(ref, str):
            for at in (i for i, ch in enumerate(ref) if ch == "@"):
                found = self._by_name.get((ref[:at], ref[at + 1 :]))
                if found is not None:
                    return self.nodes[found]
            named = [i for (_, version), i in self._by_name.items() if version == ref]
            if len(named) == 1:
                return self.nodes[named[0]]
            if len(named) > 1:
                raise NotFound(f"version name {ref!r} is ambiguous: write it as pattern@{ref}")
            patterns = ", ".join(map(repr, self.pattern_ids)) or "no pattern"
            raise NotFound(f"no version {ref!r} in the lineage of {patterns}{self._as_of_note()}")
        raise NotFound(f"not a version reference: {ref!r}")

    def _as_of_note(self) -> str:
        return f" as of {self.as_of}" if self.as_of else ""

    def versions(self, pattern_id: str | None = None) -> list[LineageNode]:
        return [n for n in self.nodes.values() if pattern_id is None or n.pattern_id == pattern_id]

    # --- traversal ---------------------------------------------------------------------------

    def parents(self, ref: Any) -> list[LineageNode]:
        """Direct ancestors: parent, derived_from, merged_from and inspired_by targets."""
        seen: dict[int, None] = {}
        for _, parent, _ in self._parents[self.node(ref).id]:
            seen.setdefault(parent)
        return [self.nodes[i] for i in seen]

    def children(self, ref: Any) -> list[LineageNode]:
        return [self.nodes[i] for i in self._children[self.node(ref).id]]

    def _walk(self, start: int, step) -> list[LineageNode]:
        seen = {start}
        order: list[tuple[int, int]] = []
        queue = deque([(start, 0)])
        while queue:
            current, depth = queue.popleft()
            for nxt in step(current):
                if nxt not in seen:
                    seen.add(nxt)
                    order.append((depth + 1, nxt))
                    queue.append((nxt, depth + 1))
        return [self.nodes[i] for _, i in sorted(order)]

    def get_ancestors(self, ref: Any) -> list[LineageNode]:
        """Every version `ref` descends from (through merges too), nearest first."""
        return self._walk(self.node(ref).id, lambda i: [p for _, p, _ in self._parents[i]])

    def get_descendants(self, ref: Any) -> list[LineageNode]:
        """Every version that descends from `ref`, nearest first."""
        return self._walk(self.node(ref).id, lambda i: self._children[i])

    def primary_parent(self, ref: Any) -> LineageNode | None:
        """The first parent: `parent_id`, else the derived_from, merged_from, inspired_by target."""
        parents = self._parents[self.node(ref).id]
        return self.nodes[parents[0][1]] if parents else None

    def get_lineage_path(self, ref: Any) -> list[LineageNode]:
        """The versions from the root to `ref`, following each version's primary parent (like
        `git log --first-parent`); merged-in branches are in `get_ancestors`."""
        path = [self.node(ref)]
        seen = {path[0].id}
        while (parent := self.primary_parent(path[-1])) is not None and parent.id not in seen:
            seen.add(parent.id)
            path.append(parent)
        return path[::-1]

    def get_active(self, pattern_id: str | None = None) -> LineageNode | None:
        """The active version of `pattern_id` as of the graph's window (the only pattern if None)."""
        if pattern_id is None:
            if len(self.pattern_ids) > 1:
                raise NotFound(f"the graph holds several patterns ({', '.join(map(repr, self.pattern_ids))}): name one")
            pattern_id = self.pattern_ids[0] if self.pattern_ids else None
        return next((n for n in self.nodes.values() if n.pattern_id == pattern_id and n.status == VersionStatus.ACTIVE), None)

    def diff(self, version_a: Any, version_b: Any) -> ConfigDiff:
        """How `version_b`'s config differs from `version_a`'s (merge patch and changed leaves)."""
        return config_diff(self.node(version_a), self.node(version_b))

    def depths(self) -> dict[int, int]:
        """Longest ancestry distance from a root, per node (the layer of a layered drawing)."""
        depth: dict[int, int] = {}
        for node_id in self.nodes:  # ids increase with creation, so parents mostly come first
            stack = [node_id]
            while stack:
                current = stack[-1]
                if current in depth:
                    stack.pop()
                    continue
                pending = [p for _, p, _ in self._parents[current] if p not in depth and p not in stack]
                if pending:
                    stack.extend(pending)
                    continue
                depth[current] = 1 + max((depth.get(p, -1) for _, p, _ in self._parents[current]), default=-1)
                stack.pop()
        return depth

    # --- export ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "usage_window": self.usage_window.isoformat() if self.usage_window else None,
            "patterns": self.pattern_ids,
            "active": {p: (a.version if (a := self.get_active(p)) else None) for p in self.pattern_ids},
            "nodes": [n.to_dict() for n in self.nodes.values()],
            "edges": [e.to_dict() for e in self.edges],
        }

    def node_rows(self) -> list[dict[str, Any]]:
        """One flat row per version, the most relevant first (by status, then newest)."""
        rank = {s: i for i, s in enumerate(VersionStatus)}
        ordered = sorted(self.nodes.values(), key=lambda n: (rank.get(n.status, 9), -n.id))
        return [
            {
                "pattern_id": n.pattern_id,
                "version": n.version,
                "status": str(n.status),
                "why": n.status_reason,
                "parent": self.nodes[n.parent_id].version if n.parent_id in self.nodes else None,
                "source": n.source,
                "created_at": n.created_at.isoformat(timespec="seconds") if n.created_at else None,
                "introduced": n.introduced.isoformat() if n.introduced else None,
                "usage_count": n.usage_count,
                "success_rate": n.success_rate,
                "usage_total": n.usage_total,
            }
            for n in ordered
        ]

    def edge_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "from": self.nodes[e.from_id].label,
                "edge": e.edge_type,
                "to": self.nodes[e.to_id].label,
                "window": e.window_start.isoformat() if e.window_start else None,
                "experiment": e.experiment_id,
                "decision": e.decision_id,
                "p_value": e.p_value,
                "effect": e.effect,
                "evidence": e.summary() or e.evidence.get("title") or e.evidence.get("reason") or "",
            }
            for e in reversed(self.edges)
        ]
