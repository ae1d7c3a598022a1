"""The Dagster UI in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright
against the integration deployment's webserver.

Screenshots go to test-artifacts/ui/ (git-ignored), one per page, so a person can check that they
show what these tests claim.
"""

from __future__ import annotations

import os
import re
import shutil
from datetime import date
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pytest

from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.clock import midnight_after
from feedback_loop_dagster.defs.code_location.jobs import PATTERN_TAG
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions, materialize_windows, quiet_run_config
from feedback_loop_dagster.lib.storage.database import get_engine
from feedback_loop_dagster_tests.integration.data import experiment_history
from feedback_loop_dagster_tests.integration.harness import DESIGN_ASSETS, REPO

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

CHROMIUM = os.environ.get("FEEDBACK_LOOP_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium dials out at start, which a closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts" / "ui"
PATTERN = "ui-summarise-ticket"
DAYS = [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
# Pages of a webserver on a loaded machine (2 cores at load average 20) take long to render.
LOAD_TIMEOUT_MS = 300_000


@pytest.fixture(scope="module")
def experiment_data(deployment):
    """Three days of a pattern whose A/B experiment runs from the first day, materialised in-process
    into the instance the webserver reads (as the CLI and the demo do)."""
    engine = get_engine(deployment.warehouse_url)
    local = build_definitions(FeedbackDatabases(database_url=deployment.warehouse_url))
    add_pattern_partitions(deployment.instance, [PATTERN])
    for day in experiment_history(engine, PATTERN, DAYS[0], len(DAYS)):
        # each day's run replayed at the midnight closing it, as the demo does (defs/code_location/clock.py)
        materialize_windows(
            local, deployment.instance, [PATTERN], day, day, run_config=quiet_run_config(midnight_after(day))
        )
    return PATTERN


@pytest.fixture(scope="module")
def page(deployment):
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM}: apt-get install chromium chromium-driver"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1600, "height": 1000})
            tab.set_default_timeout(LOAD_TIMEOUT_MS)
            yield tab
        finally:
            browser.close()


def _open(page, deployment, path: str, ready_text: str, exact: bool = True):
    page.goto(deployment.url + path)
    page.get_by_text(ready_text, exact=exact).first.wait_for()
    _dismiss_community_dialog(page)


def _dismiss_community_dialog(page):
    """The webserver greets a first visit with "Join the Dagster community"; Skip closes it."""
    dialog = page.get_by_text("Join the Dagster community")
    if getattr(page, "_community_dialog_dismissed", False):
        if not dialog.count():
            return
    else:
        try:
            dialog.wait_for(timeout=5_000)
        except Exception:
            return
    page._community_dialog_dismissed = True
    page.get_by_role("button", name="Skip").click()
    dialog.wait_for(state="hidden")


def _shot(page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.wait_for_timeout(500)  # let the last layout pass paint
    if page.get_by_text("Join the Dagster community").count():  # it can open after the page loaded
        _dismiss_community_dialog(page)
        page.wait_for_timeout(300)
    page.screenshot(path=str(path))
    return path


def _label_matches(label: str, asset: str) -> bool:
    """A node label is the asset's name, or that name shortened with an ellipsis in the middle."""
    if label == asset:
        return True
    if "…" in label:
        head, _, tail = label.partition("…")
        return asset.startswith(head) and asset.endswith(tail) and len(asset) > len(head) + len(tail)
    return False


GRAPH_SCRIPT = """() => {
  const nodes = [];
  for (const fo of document.querySelectorAll('svg foreignObject')) {
    const name = fo.querySelector('[class*="AssetNode_assetName"], [class*="assetName"]');
    if (!name) continue;
    nodes.push({label: name.textContent.trim(), x: +fo.getAttribute('x'), width: +fo.getAttribute('width'),
                y: +fo.getAttribute('y'), height: +fo.getAttribute('height')});
  }
  const edges = [];
  for (const p of document.querySelectorAll('svg path[marker-end]')) {
    const stroke = p.getAttribute('stroke') || '';
    if (stroke.includes('highlighted')) continue;  // the hover layer repeats every edge
    const nums = (p.getAttribute('d').match(/-?[0-9.]+/g) || []).map(Number);
    edges.push({x1: nums[0], y1: nums[1], x2: nums[nums.length - 2], y2: nums[nums.length - 1]});
  }
  return {nodes, edges};
}"""


def test_asset_graph_shows_the_designs_assets_and_their_edges(deployment, page):
    expected = DESIGN_ASSETS
    # The lineage of the middle asset, deep enough to reach both ends of the chain.
    _open(page, deployment, "/assets/experiments?view=lineage&lineageScope=neighbors&lineageDepth=8", "experiments")
    page.wait_for_function("() => document.querySelectorAll('svg path[marker-end]').length >= 7")
    _shot(page, "01-asset-graph")
    graph = page.evaluate(GRAPH_SCRIPT)

    nodes = {}
    for node in graph["nodes"]:
        names = [a for a in expected if _label_matches(node["label"], a)]
        if len(names) == 1:
            nodes[names[0]] = node
    assert set(nodes) == set(expected), f"graph labels: {[n['label'] for n in graph['nodes']]}"

    def node_at(x: float, y: float, side: str) -> str | None:
        for name, n in nodes.items():
            edge_x = n["x"] + n["width"] if side == "right" else n["x"]
            if abs(edge_x - x) <= 12 and n["y"] <= y <= n["y"] + n["height"]:
                return name
        return None

    drawn = {(node_at(e["x1"], e["y1"], "right"), node_at(e["x2"], e["y2"], "left")) for e in graph["edges"]}
    chain = set(zip(expected, expected[1:]))
    assert chain <= drawn, f"missing edges {chain - drawn}; drawn {drawn}"


def test_a_partitioned_asset_shows_pattern_by_window_partitions(deployment, page, experiment_data):
    _open(page, deployment, "/assets/feedback_dataset?view=partitions", "Partitions")
    # One column per dimension: patterns (filterable) and daily windows.
    page.get_by_placeholder("Filter by pattern").fill(experiment_data)
    page.get_by_text(experiment_data, exact=True).first.click()
    page.get_by_placeholder("Filter by window").fill("2026-03-0")
    for day in DAYS:
        page.get_by_text(day.isoformat(), exact=True).first.wait_for()
    page.get_by_text(DAYS[-1].isoformat(), exact=True).first.click()
    page.get_by_text(f"{experiment_data}|{DAYS[-1]}", exact=True).first.wait_for()
    page.get_by_text("Materialized", exact=True).first.wait_for()
    _shot(page, "02-feedback-dataset-partitions")
    assert page.get_by_text(re.compile(r"\d+ Partitions Selected")).count() >= 1


def test_ab_test_results_materialisation_shows_its_table_and_plot(deployment, page, experiment_data):
    partition = f"{experiment_data}|{DAYS[-1]}"
    _open(page, deployment, f"/assets/ab_test_results?view=partitions&partition={quote(partition)}", "lift_over_time")
    # The partition's own results (its pattern's experiments): one row per experiment, with its
    # verdict and the engine's numbers.
    page.locator("tr", has=page.get_by_text("pattern_id", exact=True)).first.get_by_text(experiment_data, exact=True).first.wait_for()
    results = page.locator("tr", has=page.get_by_text("results", exact=True)).first
    for column in ("experiment", "verdict", "p_value", "confidence_score", "performance_delta"):
        results.get_by_text(column, exact=True).first.wait_for()
    _shot(page, "03-ab-test-results-table")

    page.locator("tr", has=page.get_by_text("lift_over_time", exact=True)).get_by_text("[Show Markdown]").click()
    plot = page.locator('img[src^="data:image/png"]').first
    plot.wait_for()
    assert plot.evaluate("img => img.complete && img.naturalWidth > 100 && img.naturalHeight > 50")
    assert experiment_data in (plot.get_attribute("alt") or "")
    _shot(page, "04-ab-test-results-plot")
    page.get_by_role("button", name="Close").click()


def test_automation_pages_list_our_sensor_and_schedule(deployment, page):
    _open(page, deployment, "/automation", "new_executions_sensor")
    page.get_by_text("daily_loop_schedule", exact=True).first.wait_for()
    _shot(page, "05-automation")

    _open(page, deployment, "/locations/feedback_loop_dagster/sensors/new_executions_sensor", "Polls hook_executions", exact=False)
    page.get_by_text("new_executions_sensor").first.wait_for()
    page.get_by_text("feedback_loop_job").first.wait_for()
    _shot(page, "06-sensor")

    _open(page, deployment, "/locations/feedback_loop_dagster/schedules/daily_loop_schedule", "for every pattern", exact=False)
    page.get_by_text("daily_loop_schedule").first.wait_for()
    page.get_by_text("feedback_loop_job").first.wait_for()
    _shot(page, "07-schedule")


def _markdown_images(page, label: str) -> list[dict]:
    """Opens a markdown metadata entry's dialog; each embedded picture's natural and shown size."""
    page.locator("tr", has=page.get_by_text(label, exact=True)).first.get_by_text("[Show Markdown]").click()
    images = page.locator('img[src^="data:image/svg+xml"]')
    images.first.wait_for()
    return [images.nth(i).evaluate("img => ({natural: img.naturalWidth, shown: img.clientWidth, alt: img.alt})")
            for i in range(images.count())]


def test_the_lineage_picture_is_shown_at_its_legible_size(deployment, page, experiment_data):
    partition = f"{experiment_data}|{DAYS[-1]}"
    _open(page, deployment, f"/assets/pattern_lineage?view=partitions&partition={quote(partition)}", "mermaid")
    pictures = _markdown_images(page, "graph")
    _shot(page, "08-lineage-picture")
    mine = [p for p in pictures if p["alt"].startswith(experiment_data)]
    # drawn with 16 px (12 pt) names and shown 1:1, not scaled down
    assert mine and all(p["natural"] >= 640 and p["shown"] == p["natural"] for p in mine), pictures
    page.get_by_role("button", name="Close").click()


def test_the_health_page_shows_the_loops_figures(deployment, page, experiment_data):
    partition = f"{experiment_data}|{DAYS[-1]}"
    _open(page, deployment, f"/assets/loop_health?view=partitions&partition={quote(partition)}", "loop_over_time")
    table = page.locator("tr", has=page.get_by_text("loop", exact=True)).first
    for text in ("(all patterns)", experiment_data, "accuracy", "false_positives", "rejection_rate", "running"):
        table.get_by_text(text, exact=True).first.wait_for()
    _shot(page, "09-loop-health")
    plots = _markdown_images(page, "loop_over_time")
    assert plots and plots[0]["shown"] == plots[0]["natural"] >= 800
    _shot(page, "10-loop-health-plot")
    page.get_by_role("button", name="Close").click()


def test_runs_launched_in_process_are_the_jobs_runs_with_working_links(deployment, page, experiment_data):
    """The fixture's runs were executed in-process, as the CLI and the demo execute theirs
    (defs/in_process_runs/runs.py): the UI files them under the job of the code location, not under /guess/."""
    ours = deployment.instance.get_runs(dg.RunsFilter(tags={PATTERN_TAG: experiment_data}))
    assert len(ours) == len(DAYS)
    _open(page, deployment, "/locations/feedback_loop_dagster/jobs/feedback_loop_job/runs", "feedback_loop_job")
    for run in ours:
        page.get_by_text(run.run_id[:8], exact=True).first.wait_for()
    assert page.get_by_text("No runs found").count() == 0
    _shot(page, "11-job-runs-tab")

    _open(page, deployment, f"/runs/{ours[0].run_id}", "feedback_loop_job")
    links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    assert "/locations/feedback_loop_dagster/jobs/feedback_loop_job" in links, links
    assert not [link for link in links if "/guess/" in link]
    _shot(page, "12-in-process-run")

    _open(page, deployment, "/overview/activity/timeline", "feedback_loop_dagster")
    page.get_by_text("feedback_loop_job", exact=True).first.wait_for()
    _shot(page, "13-overview-timeline")
