"""Pictures written as SVG text: a data URL that survives markdown, names escaped, and the health
plot showing every series it draws with its legend, at the size the UI shows it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta
from urllib.parse import unquote

from feedback_loop_dagster.defs.per_partition.pictures import svg_markdown
from feedback_loop_dagster.lib import svg
from feedback_loop_dagster.lib.lineage import lineage_graph
from feedback_loop_dagster.lib.lineage.picture import lineage_svg
from feedback_loop_dagster.lib.registry.versions import register_version
from feedback_loop_dagster.lib.report.health import Health
from feedback_loop_dagster.lib.report.health_picture import OPEN, OUTCOMES, health_svg
from feedback_loop_dagster_tests.svg_pictures import NS, svg_pictures, texts


def test_the_data_url_keeps_the_svg_whole_inside_markdown():
    picture = svg.document(10, 10, [svg.text(1, 1, 'a <b> & "c" #1 (x) [y] 100%')])
    url = svg.data_url(picture)
    assert unquote(url.removeprefix("data:image/svg+xml,")) == picture
    assert not set("<>#()[]%\"") & set(url.removeprefix("data:image/svg+xml,").replace("%", ""))
    ((alt, root),) = svg_pictures(svg_markdown(picture, "p [draft]"))
    assert alt == "p \\[draft\\]" and texts(root) == ['a <b> & "c" #1 (x) [y] 100%']


def test_the_health_plot_names_every_series_and_its_dates():
    first = date(2026, 3, 1)
    series = [Health(pattern_id="p", as_of=first + timedelta(days=i), promotions=i // 3, confirmed=i // 6,
                     rolled_back=i // 9, under_watch=i // 3 - i // 6 - i // 9, rejected=i // 4, inconclusive=i // 7,
                     improvement_accuracy=None if i < 3 else 0.5, false_positive_rate=None if i < 3 else 0.25,
                     running=1, pending_review=i % 2) for i in range(20)]
    root = ET.fromstring(health_svg("p: loop health", series))
    shown = texts(root)
    assert (root.get("width"), root.get("height")) == ("900", "640") and shown[0] == "p: loop health"
    assert {"improvement accuracy", "false-positive rate", "target > 90%", "target < 5%"} <= set(shown)
    assert {label for _, label, _ in OUTCOMES + OPEN} <= set(shown)
    assert {"2026-03-01", "0%", "100%"} <= set(shown)
    assert len(root.findall(f"{NS}polygon")) == len(OUTCOMES) + len(OPEN)  # one band per stacked series
    assert min(float(t.get("font-size")) for t in root.iter(f"{NS}text")) >= 12


def test_a_long_lineage_shows_how_many_versions_it_leaves_out(engine):
    with engine.begin() as conn:
        parent = None
        for i in range(35):
            parent = register_version(conn, "q", f"v{i}", {"n": i}, parent_id=parent.id if parent else None,
                                      source="observed")
    with engine.connect() as conn:
        graph = lineage_graph(conn, "q")
    shown = texts(ET.fromstring(lineage_svg("q", graph, max_nodes=30)))
    assert shown[0] == "q  (30 of 35 versions shown)" and {f"v{i}" for i in range(5, 35)} <= set(shown)
