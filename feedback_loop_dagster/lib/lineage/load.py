"""Loading the version graph from the warehouse: one set-based load, any number of windows.

`load_lineage(conn, pattern_ids)` reads the patterns' versions, edges (with their decisions),
experiments, labels and daily usage in a handful of queries (patterns joined to them by
`merged_from` / `inspired_by` edges are pulled in too), and `LineageData.graph(as_of)` builds
the graph as of the end of any window in memory, so a backfill over many windows loads once.

Status of a version as of window W (first that applies; see graph.STATUS_MEANINGS):

- `active`: where the `active` label pointed at the end of W. Replayed from the label-moving
  edges up to W (`promoted_over`, `rolled_back_to`, `replaced_by`); when no such edge is later
  than W, the stored label is authoritative (it also covers labels set by hand).
- `candidate`: treatment of an `ab` experiment created by W (it starts at W + 1 at the latest)
  and not concluded by W.
- `rolled_back`: its last label event up to W was being rolled back from.
- `deprecated`: was active at some point up to W and no longer is.
- `archived`: anything else: rejected or stopped candidates, versions never promoted.

A version belongs to the graph as of W when it was introduced by then: the earliest of its
creation date, the first day it has executions, the window of any edge it is on, and the day
before an experiment it is an arm of starts. So a backfill of old windows sees the versions of that time,
although the loop created them later in wall-clock time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.lineage.graph import LineageEdge, LineageGraph, LineageNode, VersionStatus
from feedback_loop_dagster.lib.registry.edges import EVENT_EDGES
from feedback_loop_dagster.lib.registry.versions import ACTIVE, CANDIDATE, Version
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.vocabulary import ExperimentKind, ExperimentStatus

_MAX_EXPANSION_ROUNDS = 20


def _day(value: date | datetime | None) -> date | None:
    if value is None:
        return None
    return value.date() if isinstance(value, datetime) else value


@dataclass
class LineageData:
    """Raw rows of some patterns' registry; `graph(as_of)` turns them into a LineageGraph."""

    pattern_ids: list[str]
    versions: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    experiments: list[dict[str, Any]]
    labels: dict[tuple[str, str], int]
    usage: dict[tuple[str, str], list[tuple[date, int, int, int]]]  # (pattern, version) -> (day, n, ok, finished)

    def last_usage_day(self) -> date | None:
        return max((d for days in self.usage.values() for d, *_ in days), default=None)

    def graph(self, as_of: date | None = None) -> LineageGraph:
        """The graph as of the end of window `as_of` (None: now, with the current labels)."""
        usage_window = as_of or self.last_usage_day()
        by_id = {v["id"]: v for v in self.versions}
        introduced = self._introduced()
        included = {i for i in by_id if as_of is None or (introduced[i] is not None and introduced[i] <= as_of)}

        edges = []
        for row in self.edges:
            effective = _day(row["window_start"]) or _day(row["created_at"])
            if row["from_version_id"] not in included or row["to_version_id"] not in included:
                continue
            if as_of is not None and effective is not None and effective > as_of:
                continue
            evidence = dict(row["evidence"])  # a copy: decided_by is added below
            if row.get("decided_by"):
                evidence.setdefault("decided_by", row["decided_by"])
            edges.append(
                LineageEdge(
                    id=row["id"],
                    from_id=row["from_version_id"],
                    to_id=row["to_version_id"],
                    edge_type=row["edge_type"],
                    window_start=effective,
                    created_at=row["created_at"],
                    decision_id=row["decision_id"],
                    evidence=evidence,
                    lead_result=_lead_result(row.get("decision_result")),
                )
            )

        statuses: dict[int, tuple[str, str]] = {}
        for pattern_id in {by_id[i]["pattern_id"] for i in included}:
            statuses.update(self._statuses(pattern_id, included, by_id, as_of))

        nodes = []
        for i in sorted(included):
            row = by_id[i]
            days = self.usage.get((row["pattern_id"], row["version"]), [])
            in_window = [d for d in days if d[0] == usage_window]
            finished = sum(d[3] for d in in_window)
            nodes.append(
                LineageNode(
                    **vars(Version.from_row(row)),
                    status=statuses[i][0],
                    status_reason=statuses[i][1],
                    introduced=introduced[i],
                    usage_count=sum(d[1] for d in in_window),
                    success_rate=(sum(d[2] for d in in_window) / finished) if finished else None,
                    usage_total=sum(d[1] for d in days if usage_window is None or d[0] <= usage_window),
                )
            )
        return LineageGraph(nodes, edges, as_of=as_of, usage_window=usage_window)

    def _introduced(self) -> dict[int, date | None]:
        first: dict[int, date | None] = {}
        for row in self.versions:
            days = self.usage.get((row["pattern_id"], row["version"]))
            first[row["id"]] = min(
                [d for d in (_day(row["created_at"]), min((d for d, *_ in days), default=None) if days else None) if d]
            )
        # An edge or an experiment in window w shows that both its versions existed by then.
        for row in self.edges:
            when = _day(row["window_start"])
            for end in (row["from_version_id"], row["to_version_id"]):
                if when is not None and end in first:
                    first[end] = min(first[end], when)
        for row in self.experiments:
            created = row["start_window"] - timedelta(days=1)
            for arm in (row["control_version_id"], row["treatment_version_id"]):
                if arm in first:
                    first[arm] = min(first[arm], created)
        return first

    def _statuses(
        self, pattern_id: str, included: set[int], by_id: dict[int, dict], as_of: date | None
    ) -> dict[int, tuple[str, str]]:
        """Each included version's status and why, as of `as_of` (see the module doc)."""
        active, active_reason, state, ever_active = self._label_history(pattern_id, by_id, as_of)
        candidates, concluded = self._experiment_arms(pattern_id, as_of)
        out = {}
        for i in included:
            if by_id[i]["pattern_id"] != pattern_id:
                continue
            if i == active:
                out[i] = (VersionStatus.ACTIVE, active_reason)
            elif i in candidates:
                out[i] = (VersionStatus.CANDIDATE, candidates[i])
            elif i in state:
                out[i] = state[i]
            elif i in ever_active:
                out[i] = (VersionStatus.DEPRECATED, "no longer active")
            else:
                seen = by_id[i]["source"] in ("observed", "implicit")
                out[i] = (VersionStatus.ARCHIVED, concluded.get(i, "seen in executions, never made active" if seen else "never active"))
        return out

    def _label_history(
        self, pattern_id: str, by_id: dict[int, dict], as_of: date | None
    ) -> tuple[int | None, str, dict[int, tuple[str, str]], set[int]]:
        """Replays the `active` label's moves up to `as_of`: the active version and why, the
        statuses the moves gave the versions they left, and every version ever active."""
        def name(i: int) -> str:
            return by_id[i]["version"] if i in by_id else f"#{i}"

        def effective(e) -> date:
            return _day(e["window_start"]) or _day(e["created_at"])

        events = sorted(
            (
                e
                for e in self.edges
                if e["edge_type"] in EVENT_EDGES and by_id.get(e["from_version_id"], {}).get("pattern_id") == pattern_id
            ),
            key=lambda e: (effective(e), e["id"]),
        )
        upto = [e for e in events if as_of is None or effective(e) <= as_of]
        later = [e for e in events if as_of is not None and effective(e) > as_of]
        label = self.labels.get((pattern_id, ACTIVE))
        if events:
            first = events[0]
            active = first["to_version_id"] if first["edge_type"] == "promoted_over" else first["from_version_id"]
        else:
            active = label
        active_reason = "first version of the pattern"
        state: dict[int, tuple[str, str]] = {}
        ever_active = {active} if active is not None else set()
        for e in upto:
            src, dst, when = e["from_version_id"], e["to_version_id"], effective(e)
            evidence = e["evidence"]
            exp = f" (experiment #{evidence['experiment_id']})" if evidence.get("experiment_id") else ""
            if e["edge_type"] == "promoted_over":
                state[dst] = (VersionStatus.DEPRECATED, f"{name(src)} was promoted over it in {when}{exp}")
                active, active_reason = src, f"promoted over {name(dst)} in {when}{exp}"
            elif e["edge_type"] == "rolled_back_to":
                state[src] = (VersionStatus.ROLLED_BACK, f"rolled back to {name(dst)} in {when}{exp}")
                active, active_reason = dst, f"restored when {name(src)} was rolled back in {when}{exp}"
            else:  # replaced_by
                state[src] = (VersionStatus.DEPRECATED, f"replaced by {name(dst)} in {when}")
                active, active_reason = dst, f"replaced {name(src)} in {when}"
            ever_active.add(active)
        if not later and label is not None and label != active:
            active, active_reason = label, "set as active"
            ever_active.add(label)
        return active, active_reason, state, ever_active

    def _experiment_arms(self, pattern_id: str, as_of: date | None) -> tuple[dict[int, str], dict[int, str]]:
        """The treatments of A/B experiments running as of `as_of` (candidates) and of those
        concluded by then, each with why."""
        candidates: dict[int, str] = {}
        concluded: dict[int, str] = {}
        for x in self.experiments:
            if x["pattern_id"] != pattern_id or x["kind"] != ExperimentKind.AB:
                continue
            if as_of is None:
                running = x["status"] == ExperimentStatus.RUNNING
            else:
                running = x["start_window"] - timedelta(days=1) <= as_of and (
                    x["concluded_window"] is None or x["concluded_window"] > as_of
                )
            if running:
                candidates[x["treatment_version_id"]] = f"treatment of experiment #{x['id']} from {x['start_window']}"
            elif x["concluded_window"] is not None and (as_of is None or x["concluded_window"] <= as_of):
                concluded[x["treatment_version_id"]] = f"{x['outcome'] or x['status']} in experiment #{x['id']} ({x['concluded_window']})"
        current = self.labels.get((pattern_id, CANDIDATE))
        if as_of is None and current is not None and current not in candidates:
            candidates[current] = "candidate label"
        return candidates, concluded


def _lead_result(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The lead metric's result in a stored A/B result, if it has one."""
    if result is None:
        return None
    return (result.get("metrics") or {}).get(result.get("lead_metric"))


def load_lineage(conn: Connection, pattern_ids: Iterable[str]) -> LineageData:
    """One load of the patterns' registry (plus patterns linked to them by cross-pattern edges)."""
    v, e = tables.pattern_versions, tables.lineage_edges
    patterns: set[str] = set(pattern_ids)
    frontier = set(patterns)
    versions: dict[int, dict[str, Any]] = {}
    edges: dict[int, dict[str, Any]] = {}
    for _ in range(_MAX_EXPANSION_ROUNDS):
        if not frontier:
            break
        for row in conn.execute(sa.select(v).where(v.c.pattern_id.in_(sorted(frontier)))).mappings():
            versions[row["id"]] = dict(row)
        ids = sa.select(v.c.id).where(v.c.pattern_id.in_(sorted(frontier))).scalar_subquery()
        d, ab = tables.decisions, tables.ab_results
        query = (  # with the A/B look each decision was taken on, for the effect in its unit
            sa.select(e, d.c.decided_by, ab.c.result.label("decision_result"))
            .select_from(
                e.outerjoin(d, d.c.id == e.c.decision_id).outerjoin(
                    ab, sa.and_(ab.c.experiment_id == d.c.experiment_id, ab.c.window_start == d.c.window_start)
                )
            )
            .where(sa.or_(e.c.from_version_id.in_(ids), e.c.to_version_id.in_(ids)))
        )
        for row in conn.execute(query).mappings():
            edges[row["id"]] = dict(row)
        unknown = {i for row in edges.values() for i in (row["from_version_id"], row["to_version_id"])} - versions.keys()
        found = set(conn.scalars(sa.select(v.c.pattern_id).where(v.c.id.in_(sorted(unknown))))) if unknown else set()
        frontier = found - patterns
        patterns |= frontier
    x = tables.experiments
    experiments = [
        dict(r)
        for r in conn.execute(
            sa.select(
                x.c.id, x.c.pattern_id, x.c.kind, x.c.control_version_id, x.c.treatment_version_id,
                x.c.start_window, x.c.status, x.c.concluded_window, x.c.outcome,
            ).where(x.c.pattern_id.in_(sorted(patterns))).order_by(x.c.id)
        ).mappings()
    ]
    lbl = tables.pattern_labels
    labels = {
        (p, name): vid
        for p, name, vid in conn.execute(
            sa.select(lbl.c.pattern_id, lbl.c.label, lbl.c.version_id).where(lbl.c.pattern_id.in_(sorted(patterns)))
        )
    }
    s = tables.daily_version_stats
    usage: dict[tuple[str, str], list] = defaultdict(list)
    for p, version, day, n, ok, finished in conn.execute(
        sa.select(s.c.pattern_id, s.c.version, s.c.day, s.c.executions, s.c.success_count, s.c.success_n)
        .where(s.c.pattern_id.in_(sorted(patterns)))
        .order_by(s.c.day)
    ):
        usage[(p, version)].append((day, int(n), int(ok), int(finished)))
    return LineageData(
        pattern_ids=sorted(patterns),
        versions=sorted(versions.values(), key=lambda r: r["id"]),
        edges=sorted(edges.values(), key=lambda r: r["id"]),
        experiments=experiments,
        labels=labels,
        usage=dict(usage),
    )


def lineage_graph(conn: Connection, pattern_ids: str | Iterable[str], as_of: date | None = None) -> LineageGraph:
    """The graph of one pattern (or several) as of the end of window `as_of` (None: now)."""
    ids = [pattern_ids] if isinstance(pattern_ids, str) else list(pattern_ids)
    return load_lineage(conn, ids).graph(as_of)
