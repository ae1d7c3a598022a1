"""Lineage pictures: Mermaid whose node ids read as their labels and whose labels are escaped, an SVG
legible at the size the UI shows it, and a picture for every pattern of a run."""

from __future__ import annotations

import re
from datetime import date

import dagster as dg
import pytest

from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions, materialize_windows
from feedback_loop_dagster.defs.lineage.assets import lineage_picture_metadata
from feedback_loop_dagster.defs.per_partition.plots import markdown_text
from feedback_loop_dagster.lib.lineage import lineage_graph, mermaid
from feedback_loop_dagster.lib.lineage.render import mermaid_ids, mermaid_text, visible_text
from feedback_loop_dagster.lib.registry.edges import add_edge
from feedback_loop_dagster.lib.registry.versions import ACTIVE, register_version, set_label
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster_tests.svg_pictures import NS, svg_pictures, texts

W = date(2026, 3, 2)
# Names that came from a source's pattern_version (kept as they are) and must not leak into Mermaid.
HOSTILE = ['x" click v1 "javascript:alert(1)', "a\u200bb", "end", "2024.1-rc", "v1]:::active --> v9[", "<b>#1</b> & co",
           "`md` string"]
NODE = re.compile(r'^    (\w+)\["([^"]*)<br/>(\w+) · ([^"]*)"\]:::(\w+)$')
EDGE = re.compile(r'^    (\w+) (-->|==>|-\.->)\|"([^"]*)"\| (\w+)$')


@pytest.fixture
def hostile_graph(engine):
    with engine.begin() as conn:
        v1 = register_version(conn, "p", "v1", {"n": 1}, source="manual")
        set_label(conn, "p", ACTIVE, v1.id, None)
        for i, name in enumerate(HOSTILE):
            v = register_version(conn, "p", name, {"n": i + 2}, parent_id=v1.id, source="observed")
            add_edge(conn, v.id, v1.id, "derived_from", window_start=W)
    with engine.connect() as conn:
        return lineage_graph(conn, "p", W)


def test_mermaid_node_ids_read_as_their_labels_and_every_label_is_escaped(hostile_graph):
    source = mermaid(hostile_graph)
    lines = source.splitlines()
    assert lines[0] == "flowchart RL"
    nodes, edges = {}, []
    for line in lines[1:]:
        if (node := NODE.match(line)) is not None:
            nodes[node.group(1)] = node.group(2)
        elif (edge := EDGE.match(line)) is not None:
            edges.append((edge.group(1), edge.group(4)))
        else:
            assert line.startswith("    classDef "), line  # nothing else: no `click`, no stray statement
    # Every statement is whole on its line: no raw quote, newline or invisible character inside.
    assert not re.search(r"[\x00-\x1f\u200b]", source.replace("\n", ""))
    assert len(nodes) == len(HOSTILE) + 1 and len(edges) == len(HOSTILE)
    assert set(nodes.values()) == {mermaid_text(n) for n in ["v1", *HOSTILE]}
    expected_ids = {"v1": "v1", "end": "end_", "2024.1-rc": "v_2024_1_rc", "a\u200bb": "a_b"}
    by_label = {label: node_id for node_id, label in nodes.items()}
    for name, node_id in expected_ids.items():
        assert by_label[mermaid_text(name)] == node_id
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", i) for i in nodes)
    assert {b for _, b in edges} == {"v1"}  # every edge points at the node whose label is v1


def test_mermaid_ids_stay_unique_when_names_differ_only_in_punctuation(engine):
    with engine.begin() as conn:
        for name in ("v1.0", "v1-0", "v1_0", "V1_0"):
            register_version(conn, "q", name, {"name": name}, source="observed")
    with engine.connect() as conn:
        graph = lineage_graph(conn, "q")
    ids = mermaid_ids(graph.versions("q"), several_patterns=False)
    assert sorted(ids.values(), key=str.lower) == ["v1_0", "v1_0_2", "v1_0_3", "V1_0_4"]


def test_the_picture_is_legible_and_names_are_shown_literally(hostile_graph):
    metadata = lineage_picture_metadata("p", hostile_graph)
    ((alt, svg),) = svg_pictures(metadata["graph"].value)  # well-formed XML whatever the names
    # shown 1:1 in the UI's markdown dialog: 640 px or wider, names at 16 px (12 pt), labels 13 px
    assert float(svg.get("width")) >= 640 and float(svg.get("height")) >= 340
    sizes = {t.text: float(t.get("font-size")) for t in svg.iter(f"{NS}text")}
    assert all(sizes[visible_text(name)] == 16 for name in ["v1", *HOSTILE]) and min(sizes.values()) >= 13
    assert alt == "p" and texts(svg)[0] == "p"
    assert "```mermaid\nflowchart RL" in metadata["mermaid"].value
    assert visible_text("a\u200bb\nc") == "a\\u200bb\\nc"


@pytest.fixture
def six_patterns(engine, migrated_url):
    ids = ["summarise-ticket", "agent|planner, v2", "doc-search", "résumé [draft]...", "sql-generator", "incident-triage"]
    keys = register_pattern_ids(engine, ids)
    with engine.begin() as conn:
        for pattern_id in ids:
            v1 = register_version(conn, pattern_id, "v1", {"n": 1}, source="manual")
            set_label(conn, pattern_id, ACTIVE, v1.id, None)
            v2 = register_version(conn, pattern_id, "v2", {"n": 2}, parent_id=v1.id, source="proposal")
            add_edge(conn, v2.id, v1.id, "derived_from", window_start=W)
    defs = build_definitions(FeedbackDatabases(database_url=migrated_url))
    with dg.instance_for_test() as instance:
        add_pattern_partitions(instance, [keys[i] for i in ids])
        yield defs, instance, ids, [keys[i] for i in ids]


def test_every_pattern_of_a_run_gets_its_picture(six_patterns):
    """No cap on the number of pictures (there was one of four): the rollback pattern, the sixth
    here as in the demo, has its own."""
    defs, instance, ids, keys = six_patterns
    results = materialize_windows(defs, instance, keys, W, W, asset_selection=[dg.AssetKey("pattern_lineage")])
    pictures = [
        alt
        for result in results
        for materialization in result.asset_materializations_for_node("pattern_lineage")
        for alt, _ in svg_pictures(materialization.metadata["graph"].value)
    ]
    for pattern_id in ids:
        assert markdown_text(pattern_id) in pictures, (pattern_id, pictures)


def test_edges_show_the_lead_metrics_effect_in_its_unit(engine):
    """A promotion and its rollback, decided on stored A/B looks: the edges read as the decision
    reasons do (points for success, % for latency), in tables, Mermaid and JSON."""
    import math

    from feedback_loop_dagster.lib.apply.decisions import promote, rollback
    from feedback_loop_dagster.lib.experiment.experiments import running_experiment, start_experiment
    from feedback_loop_dagster.lib.stats import get_preset
    from feedback_loop_dagster_tests.loop.builders import registered_versions, stored_look

    with engine.begin() as conn:
        v1, v2 = registered_versions(conn, "r", 2)
        experiment = start_experiment(conn, "r", v1, v2, get_preset("development"), W)
        promote(conn, experiment, W, stored_look(conn, experiment, W, "success", 0.074, 0.084), "policy")
        watch = running_experiment(conn, "r")
        later = date(2026, 3, 5)
        look = stored_look(conn, watch, later, "latency", math.log(1.2), -0.2)
        rollback(conn, watch, later, {**look, "recommendation": "reject"}, "policy")
    with engine.connect() as conn:
        graph = lineage_graph(conn, "r")
    rows = {r["edge"]: r for r in graph.edge_rows()}
    assert rows["promoted_over"]["effect"] == "success rate +7.4 pts [+3.7, +11.1]"
    assert rows["rolled_back_to"]["effect"] == "latency +20.0% [+9.5%, +31.5%] (? -> ? ms)"
    assert "lift" not in rows["promoted_over"]  # the relative lift stays in JSON, as the seed contract's field
    assert '|"promoted_over: success rate +7.4 pts [+3.7, +11.1]; p=0.001"|' in mermaid(graph)
    promoted = next(e for e in graph.to_dict()["edges"] if e["edge_type"] == "promoted_over")
    assert (promoted["lift"], promoted["effect"]) == (0.084, "success rate +7.4 pts [+3.7, +11.1]")
