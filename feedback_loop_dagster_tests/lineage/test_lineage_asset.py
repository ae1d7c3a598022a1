"""`pattern_lineage` through Dagster: one range run over several windows gives
each window's partition its own graph as of its end, with tables, Mermaid source and an embedded SVG picture."""

from __future__ import annotations

import dagster as dg

from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions, materialize_windows
from feedback_loop_dagster.defs.per_partition.plots import markdown_text
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster_tests.lineage.builders import W0, W1, W2, W3, P
from feedback_loop_dagster_tests.svg_pictures import svg_pictures, texts


def test_pattern_lineage_as_of_each_window_of_a_range_run(engine, migrated_url, family):
    register_pattern_ids(engine, [P])
    defs = build_definitions(FeedbackDatabases(database_url=migrated_url))
    node = defs.resolve_assets_def("pattern_lineage")
    assert node.group_names_by_key[dg.AssetKey("pattern_lineage")] == "lineage"
    assert node.backfill_policy == dg.BackfillPolicy.single_run()
    with dg.instance_for_test() as instance:
        add_pattern_partitions(instance, [P])
        (result,) = materialize_windows(defs, instance, [P], W0, W3, asset_selection=[dg.AssetKey("pattern_lineage")])
        assert result.success
        events = result.get_asset_materialization_events()
    # One materialisation per partition, each with its own window's graph.
    by_window = {e.materialization.partition.split("|")[1]: e.materialization.metadata for e in events}
    assert {w: m["active"].value for w, m in by_window.items()} == {
        str(W0): "v1", str(W1): "v2", str(W2): "v1", str(W3): "v1"}
    assert by_window[str(W3)]["candidates"].value == "v4" and by_window[str(W0)]["executions"].value == 100
    assert all(m["pattern_id"].value == P and m["status"].value == "ok" for m in by_window.values())
    metadata = by_window[str(W3)]
    nodes = {r.data["version"]: r.data for r in metadata["nodes"].value.records}
    assert {v: n["status"] for v, n in nodes.items()} == {"v1": "active", "v2": "rolled_back", "v3": "archived", "v4": "candidate"}
    edges = [r.data for r in metadata["edges"].value.records]
    rollback = next(e for e in edges if e["edge"] == "rolled_back_to")
    # no A/B look behind this hand-made edge: no effect to show (and never the raw relative lift)
    assert (rollback["experiment"], rollback["p_value"], rollback["effect"]) == (2, 0.001, None)
    assert "```mermaid\nflowchart RL" in metadata["mermaid"].value
    picture = metadata["graph"].value
    assert "**rolled_back**" in picture and len(picture) < 200_000
    ((alt, svg),) = svg_pictures(picture)
    shown = texts(svg)
    # every version, every status in the legend, the label moves with their p-values
    assert alt == markdown_text(P) and shown[0] == P and {"v1", "v2", "v3", "v4"} <= set(shown)
    assert {"active", "candidate", "rolled back", "deprecated", "archived"} <= set(shown)
    assert {"promoted", "p=0.003", "rolled back", "p=0.001"} <= set(shown)
