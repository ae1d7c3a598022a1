"""Lineage traversal: branches, merges, promotions, rollbacks, manual
replacements, cycles refused at write time, and a pattern with hundreds of versions."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from feedback_loop_dagster.lib.lineage import Lineage, lineage_graph, load_lineage, mermaid
from feedback_loop_dagster.lib.registry.edges import add_edge
from feedback_loop_dagster.lib.registry.versions import ACTIVE, RegistryError, register_version, set_label
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster_tests.lineage.builders import TODAY, W0, W1, W2, W3, P


def versions(nodes):
    return [n.version for n in nodes]


def test_traversal_through_branches_and_merges(engine, family):
    with engine.connect() as conn:
        graph = lineage_graph(conn, P)
    assert versions(graph.get_ancestors("v4")) == ["v2", "v3", "v1"]
    assert versions(graph.get_descendants(family["v1"])) == ["v2", "v3", "v4"]
    assert versions(graph.get_descendants("v3")) == ["v4"]
    assert versions(graph.get_lineage_path(f"{P}@v4")) == ["v1", "v2", "v4"]
    assert versions(graph.get_lineage_path((P, "v1"))) == ["v1"]
    assert graph.get_active(P).version == "v1" and graph.get_active().version == "v1"
    assert {n.version: n.status for n in graph.versions()} == {
        "v1": "active", "v2": "rolled_back", "v3": "archived", "v4": "candidate"}
    diff = graph.diff("v1", "v4")
    assert diff.patch == {"timeout_ms": 2000, "model": {"name": "large"}, "retries": 2}
    assert {c["path"]: (c["before"], c["after"]) for c in diff.changes} == {
        "model.name": ("small", "large"), "retries": (None, 2), "timeout_ms": (1000, 2000)}
    assert graph.diff("v4", "v1").patch == {"timeout_ms": 1000, "model": {"name": "small"}, "retries": None}
    with pytest.raises(LookupError, match="no version 'v9'"):
        graph.get_ancestors("v9")
    promoted = next(e for e in graph.edges if e.edge_type == "promoted_over")
    assert (promoted.experiment_id, promoted.p_value, promoted.lift) == (1, 0.003, 0.12)
    assert "flowchart RL" in mermaid(graph) and '|"promoted_over: p=0.003"|' in mermaid(graph)
    json.dumps(graph.to_dict())  # serialisable as is


def test_status_and_usage_as_of_each_window(engine, family):
    with engine.connect() as conn:
        data = load_lineage(conn, [P])
    before = data.graph(W0)
    assert {n.version: n.status for n in before.versions()} == {"v1": "active", "v2": "archived", "v3": "archived"}
    v1 = before.node("v1")
    assert (v1.usage_count, v1.success_rate, v1.usage_total) == (100, 0.95, 100)
    promoted = data.graph(W1)
    assert {n.version: n.status for n in promoted.versions()} == {"v1": "deprecated", "v2": "active", "v3": "archived"}
    assert promoted.node("v2").status_reason == "promoted over v1 in %s (experiment #1)" % W1
    assert (promoted.node("v2").usage_count, promoted.node("v2").success_rate) == (80, 0.5)
    rolled = data.graph(W2)
    assert {n.version: n.status for n in rolled.versions()} == {
        "v1": "active", "v2": "rolled_back", "v3": "archived", "v4": "candidate"}
    assert rolled.node("v1").usage_total == 210
    # Edges appear with their window: the rollback is not in the graph as of W1.
    assert "rolled_back_to" not in {e.edge_type for e in promoted.edges}
    assert "rolled_back_to" in {e.edge_type for e in rolled.edges}


def test_manual_replacement_and_stopped_experiment(engine, family):
    from feedback_loop_dagster.lib.experiment.experiments import running_experiment, stop_experiment

    with engine.begin() as conn:
        stop_experiment(conn, running_experiment(conn, P).id, W3, "not needed", user="ana")
        v5 = register_version(conn, P, "v5", {"timeout_ms": 1500}, parent_id=family["v1"].id)
        add_edge(conn, v5.id, family["v1"].id, "derived_from", window_start=W3)
        add_edge(conn, family["v1"].id, v5.id, "replaced_by", {"user": "ana"}, window_start=W3)
        set_label(conn, P, ACTIVE, v5.id, W3)
    with engine.connect() as conn:
        data = load_lineage(conn, [P])
    now = data.graph()
    assert {n.version: n.status for n in now.versions()} == {
        "v1": "deprecated", "v2": "rolled_back", "v3": "archived", "v4": "archived", "v5": "active"}
    assert now.node("v4").status_reason.startswith("stopped in experiment #")
    assert data.graph(W2).get_active().version == "v1"  # the replacement is later than W2


def test_cycles_are_refused_when_written(engine, family):
    v1, v2, v3, v4 = (family[k] for k in ("v1", "v2", "v3", "v4"))
    with engine.begin() as conn:
        for source, target, kind in ((v1, v4, "derived_from"), (v3, v4, "merged_from"), (v1, v3, "inspired_by"),
                                     (v4, v4, "derived_from")):
            with pytest.raises(RegistryError, match="would make a cycle"):
                add_edge(conn, source.id, target.id, kind)
        # Events may revisit versions (a rollback returns to an older one).
        add_edge(conn, v1.id, v4.id, "promoted_over")
        with pytest.raises(RegistryError, match="edge type must be one of"):
            add_edge(conn, v1.id, v4.id, "forked_from")


def test_lineage_service_and_cross_pattern_inspiration(engine, family):
    with engine.begin() as conn:
        other = register_version(conn, "summarise", "s1", {"timeout_ms": 500})
        add_edge(conn, other.id, family["v4"].id, "inspired_by", window_start=W3)
    lineage = Lineage(engine)
    assert versions(lineage.get_lineage_path("code-review@v4")) == ["v1", "v2", "v4"]
    assert [n.label for n in lineage.get_ancestors("summarise@s1")] == [
        "code-review@v4", "code-review@v2", "code-review@v3", "code-review@v1"]
    assert "summarise@s1" in [n.label for n in lineage.get_descendants(family["v1"])]
    assert lineage.get_active(P).version == "v1"
    assert lineage.diff("code-review@v1", "summarise@s1").patch == {"timeout_ms": 500, "model": None}
    with pytest.raises(LookupError, match="ambiguous|no pattern version"):
        lineage.get_ancestors("nope")


def _bulk_family(conn, pattern_id: str):
    """400 versions written set-based: a trunk t0..t299, a branch b<i> off every 10th trunk
    version merged back 5 versions later, and 71 versions x<k> off t150."""
    v, e = tables.pattern_versions, tables.lineage_edges
    now = datetime.now(UTC)
    names = [f"t{i}" for i in range(300)] + [f"b{i}" for i in range(10, 300, 10)] + [f"x{k}" for k in range(71)]
    conn.execute(v.insert(), [
        {"pattern_id": pattern_id, "version": n, "config": {"name": n}, "created_at": now,
         "created_by": "test", "source": "manual"} for n in names])
    ids = dict(conn.execute(sa.select(v.c.version, v.c.id).where(v.c.pattern_id == pattern_id)).all())
    parent = {f"t{i}": f"t{i - 1}" for i in range(1, 300)} | {f"b{i}": f"t{i}" for i in range(10, 300, 10)}
    parent |= {f"x{k}": "t150" for k in range(71)}
    for child, par in parent.items():
        conn.execute(v.update().where(v.c.id == ids[child]).values(parent_id=ids[par]))
    links = [(child, par, "derived_from") for child, par in parent.items()]
    links += [(f"t{i + 5}", f"b{i}", "merged_from") for i in range(10, 295, 10)]
    conn.execute(e.insert(), [
        {"pattern_id": pattern_id, "from_version_id": ids[a], "to_version_id": ids[b], "edge_type": kind,
         "evidence": {}, "window_start": TODAY, "created_at": now} for a, b, kind in links])
    set_label(conn, pattern_id, ACTIVE, ids["t0"], None)
    return ids


def test_hundreds_of_versions_with_branches_and_merges(engine):
    """Loaded in a constant number of queries and traversed in memory; the write-time cycle check
    stays fast on a 300-deep ancestry."""
    with engine.begin() as conn:
        ids = _bulk_family(conn, "big")
    with engine.begin() as conn:
        started = time.perf_counter()
        with pytest.raises(RegistryError, match="cycle"):
            add_edge(conn, ids["t0"], ids["t299"], "derived_from")
        with pytest.raises(RegistryError, match="cycle"):
            add_edge(conn, ids["b10"], ids["x70"], "inspired_by")  # x70 descends from t150, which merged b10's line
        add_edge(conn, ids["x70"], ids["b290"], "merged_from")  # no cycle: b290 does not descend from x70
        assert time.perf_counter() - started < 5

    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        with engine.connect() as conn:
            graph = lineage_graph(conn, "big")
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    assert len(graph) == 300 + 29 + 71
    assert len(statements) <= 10, statements
    assert versions(graph.get_lineage_path("t299")) == [f"t{i}" for i in range(300)]
    assert len(graph.get_ancestors("t299")) == 299 + 29  # every trunk version and every merged branch
    assert len(graph.get_descendants("t0")) == len(graph) - 1
    assert len(graph.get_descendants("t150")) == 149 + 15 + 71
    assert versions(graph.get_lineage_path("x70")) == [f"t{i}" for i in range(151)] + ["x70"]
    assert "b290" in versions(graph.get_ancestors("x70"))
    assert graph.get_active("big").version == "t0"
    assert mermaid(graph, max_nodes=40).count("classDef") == 5
