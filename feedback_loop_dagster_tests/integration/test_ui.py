"""The Dagster UI in a real browser, as a new user sees it after the demo: headless Chromium (Debian's
/usr/bin/chromium) driven by Playwright against a webserver over PostgreSQL.

The demo's scenario (its six patterns, ten days, as in loop/test_demo_scenario.py) runs in-process
into a fresh deployment, as `make demo` does; the webserver starts afterwards, as `make ui` does, so
its partitions start at the demo's first day. The tests check issue 11 page by page: each partition
shows its own figures, the A/B verdict and interval are readable without scrolling or a click,
every pattern has a lineage picture shown at its legible size, the health page shows the demo's
figures, the job's Runs tab lists the demo's runs, the partition bars are mostly materialised, and
the global graph reads in loop order at 1,600 px.

Screenshots: one per page, in $FEEDBACK_LOOP_UI_ARTIFACTS or else a folder of the pytest session's
temporary directory; the folder is printed in the test output.
"""

from __future__ import annotations

import os
import re
import shutil
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.lib.experiment.experiments import experiments_as_of, list_experiments
from feedback_loop_dagster.lib.report.experiment import headline
from feedback_loop_dagster.lib.report.health import health_as_of, health_row, load_history
from feedback_loop_dagster.lib.safe_partition_key import safe_partition_key
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import get_engine
from feedback_loop_dagster.lib.validate.ab_results import stored_results
from feedback_loop_dagster.simulator.demo import run_demo
from feedback_loop_dagster_tests.conftest import postgres_admin_url
from feedback_loop_dagster_tests.demo_scenario import DAYS, PER_DAY, SEED, scenario_patterns
from feedback_loop_dagster_tests.integration.harness import DESIGN_ASSETS, Deployment

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
VIEWPORT = {"width": 1600, "height": 1000}
# Pages of a webserver on a loaded machine (2 cores at load average 20) take long to render; every
# wait is for an element or an event, this only bounds it.
LOAD_TIMEOUT_MS = 300_000
ROLLED_BACK = "sql-generator"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A deployment holding the demo's runs and data, with its webserver started after them."""
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM}: apt-get install chromium"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with Deployment(tmp_path_factory.mktemp("ui-deployment"), postgres_admin_url()) as deployment:
        engine = get_engine(deployment.warehouse_url)
        rows = run_demo(build_definitions(FeedbackDatabases(database_url=deployment.warehouse_url)), deployment.instance, engine, engine,
                        days=DAYS, per_day=PER_DAY, seed=SEED, patterns=scenario_patterns(), progress=None)
        assert all(row.match for row in rows), [(r.pattern_id, r.actual) for r in rows]
        deployment.start_webserver()
        deployment.engine = engine
        deployment.rows = {r.pattern_id: r for r in rows}
        with engine.connect() as conn:
            deployment.last_day = conn.scalar(sa.select(sa.func.max(tables.feedback_partitions.c.window_start)))
        yield deployment


@pytest.fixture(scope="module")
def shots(request, tmp_path_factory) -> Path:
    folder = Path(os.environ.get("FEEDBACK_LOOP_UI_ARTIFACTS") or tmp_path_factory.mktemp("ui-screenshots"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\nUI screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def page(demo):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport=VIEWPORT)
            tab.set_default_timeout(LOAD_TIMEOUT_MS)
            yield tab
        finally:
            browser.close()


def _open(page, demo, path: str, ready_text: str, exact: bool = True):
    page.goto(demo.url + path)
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


def _shot(page, shots: Path, name: str) -> Path:
    if page.get_by_text("Join the Dagster community").count():  # it can open after the page loaded
        _dismiss_community_dialog(page)
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")  # painted
    path = shots / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def _partition_page(page, demo, asset: str, pattern_id: str, day: date, ready: str):
    key = f"{safe_partition_key(pattern_id)}|{day}"
    _open(page, demo, f"/assets/{asset}?view=partitions&partition={quote(key, safe='')}", ready)
    page.get_by_text(key, exact=True).first.wait_for()  # the partition's own panel
    return key


def _entry(page, label: str):
    """The value cell of a metadata entry of the partition shown."""
    return page.locator("tr", has=page.locator("td", has_text=re.compile(rf"^{re.escape(label)}$"))).first.locator("td").nth(1)


def _in_view(locator) -> bool:
    box = locator.bounding_box()
    return box is not None and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= VIEWPORT["width"] \
        and box["y"] + box["height"] <= VIEWPORT["height"]


def test_a_partition_shows_its_own_row_count(demo, page, shots):
    day = demo.last_day
    _partition_page(page, demo, "feedback_dataset", ROLLED_BACK, day, "dagster/row_count")
    fp = tables.feedback_partitions
    with demo.engine.connect() as conn:  # the valid rows stored for the partition, and for the whole run
        own = conn.scalar(sa.select(fp.c.valid_rows).where(fp.c.pattern_id == ROLLED_BACK, fp.c.window_start == day))
        run = conn.scalar(sa.select(sa.func.sum(fp.c.valid_rows)).where(fp.c.window_start == day))
    assert 0 < own < run
    _entry(page, "dagster/row_count").get_by_text(str(own), exact=True).wait_for()
    _entry(page, "pattern_id").get_by_text(ROLLED_BACK, exact=True).wait_for()
    _shot(page, shots, "01-feedback-dataset-partition")


def test_the_ab_verdict_and_interval_are_readable_without_scrolling_or_a_click(demo, page, shots):
    with demo.engine.connect() as conn:
        experiment = next(e for e in list_experiments(conn, ROLLED_BACK) if e.outcome == "rolled_back")
        day = experiment.concluded_window
        shown = experiments_as_of(conn, ROLLED_BACK, day)
        expected = [headline(e, stored_results(conn, e.id, day)[-1]) for e in shown]  # as the asset reads it
        others = {e.id for e in list_experiments(conn)} - {e.id for e in shown}
    _partition_page(page, demo, "ab_test_results", ROLLED_BACK, day, "verdict")
    verdict = _entry(page, "verdict")
    for text in expected:  # the verdict, the effect and its [low, high] interval in pts, p, n
        assert re.search(r"; success rate [+-]\d+\.\d pts \[[+-]\d+\.\d, [+-]\d+\.\d\], worse; p=", text), text
        line = verdict.get_by_text(text, exact=False)
        line.wait_for()
        assert _in_view(line), line.bounding_box()
    verdict.get_by_text('patch {"timeout_ms"', exact=False).wait_for()  # what the candidate changed, beside it
    # the lift plot is shown inline (no "[Show Markdown]"), at its natural size
    plot = _entry(page, f"lift #{experiment.id}").locator('img[src^="data:image/svg+xml"]')
    plot.wait_for()
    assert plot.evaluate("img => img.complete && img.naturalWidth >= 500 && img.clientWidth === img.naturalWidth")
    # only this partition's pattern's experiments
    text = page.locator("table").first.inner_text()
    assert not {int(i) for i in re.findall(r"#(\d+)", text)} & others, text
    _shot(page, shots, "02-ab-test-results-partition")


def test_every_demo_pattern_has_a_legible_lineage_picture(demo, page, shots):
    for index, pattern_id in enumerate(demo.rows):
        _partition_page(page, demo, "pattern_lineage", pattern_id, demo.last_day, "mermaid")
        _entry(page, "graph").get_by_text("[Show Markdown]").click()
        picture = page.locator('img[src^="data:image/svg+xml"]').first
        picture.wait_for()
        size = picture.evaluate("img => ({natural: img.naturalWidth, shown: img.clientWidth, alt: img.alt})")
        # drawn with 16 px (12 pt) names and shown 1:1, not scaled down
        assert size["natural"] >= 640 and size["shown"] == size["natural"], (pattern_id, size)
        _shot(page, shots, f"03-lineage-{index}-{safe_partition_key(pattern_id)}")
        page.get_by_role("button", name="Close").click()


def test_the_health_page_shows_the_demos_figures(demo, page, shots):
    with demo.engine.connect() as conn:
        row = health_row(health_as_of(load_history(conn), demo.last_day, ROLLED_BACK))
    assert row["promoted"] == "1" and row["false_positives"] != "-"  # the demo's rollback
    _partition_page(page, demo, "loop_health", ROLLED_BACK, demo.last_day, "health")
    health = _entry(page, "health")
    for column in ("accuracy", "false_positives", "rejection_rate", "promoted", "mean_effect"):
        health.get_by_text(column, exact=True).wait_for()
    for value in (row["false_positives"], row["mean_effect"]):
        health.get_by_text(value, exact=False).first.wait_for()
    _entry(page, "loop").get_by_text("(all patterns)", exact=True).wait_for()
    _shot(page, shots, "04-loop-health")


def test_the_jobs_runs_tab_lists_the_demos_runs(demo, page, shots):
    """The demo's runs ran in-process, as the CLI's do, and are filed under the code location's job."""
    runs = demo.instance.get_runs()
    assert len(runs) == DAYS  # one range run over the patterns per simulated day
    _open(page, demo, "/locations/feedback_loop_dagster/jobs/feedback_loop_job/runs", "feedback_loop_job")
    for run in runs:
        page.get_by_text(run.run_id[:8], exact=True).first.wait_for()
    assert page.get_by_text("No runs found").count() == 0
    _shot(page, shots, "05-job-runs-tab")


def test_the_partition_bar_is_mostly_materialised(demo, page, shots):
    _open(page, demo, "/assets/feedback_dataset?view=partitions", "Partitions")
    counts = {}
    for state in ("Materialized", "Missing"):
        label = page.get_by_text(re.compile(rf"^{state} \(\d+\)$")).first
        label.wait_for()
        counts[state] = int(re.search(r"\((\d+)\)", label.inner_text()).group(1))
    # the demo's days for each pattern; only today's open window is missing
    assert counts["Materialized"] == DAYS * len(demo.rows), counts
    assert counts["Missing"] <= 2 * len(demo.rows), counts
    _shot(page, shots, "06-feedback-dataset-partitions")


LOOP_GROUPS = ["collect", "analyze", "experiment", "apply", "track"]
GRAPH_SCRIPT = """() => [...document.querySelectorAll('svg foreignObject')].map(fo => {
  const box = fo.getBoundingClientRect();
  return {label: fo.textContent.trim(), left: box.left, right: box.right};
})"""


def test_the_global_graph_reads_in_loop_order_at_1600_px(demo, page, shots):
    """Five groups in the loop's order, left to right, all on a 1,600 px screen, names in full."""
    _open(page, demo, "/asset-groups", "Global asset lineage")
    page.wait_for_function(f"() => ({GRAPH_SCRIPT})().filter(n => {LOOP_GROUPS}.includes(n.label)).length === {len(LOOP_GROUPS)}")
    _shot(page, shots, "07-global-asset-graph")
    nodes = {n["label"]: n for n in page.evaluate(GRAPH_SCRIPT)}
    lefts = [nodes[g]["left"] for g in LOOP_GROUPS]
    assert lefts == sorted(lefts), dict(zip(LOOP_GROUPS, lefts, strict=True))
    assert all(0 <= nodes[g]["left"] and nodes[g]["right"] <= VIEWPORT["width"] for g in LOOP_GROUPS), nodes
    # and the design's assets fall into them in loop order
    groups = {spec.key.to_user_string(): spec.group_name for spec in build_definitions().resolve_all_asset_specs()}
    assert [groups[a] for a in DESIGN_ASSETS] == sorted((groups[a] for a in DESIGN_ASSETS), key=LOOP_GROUPS.index)


def test_the_per_experiment_view_names_the_partition_to_open(demo, page, shots):
    """`feedback-loop experiments show ID` ends with the path of the partition showing its last look."""
    from feedback_loop_dagster.lib.report.experiment import experiment_report

    with demo.engine.connect() as conn:
        experiment = next(e for e in list_experiments(conn, ROLLED_BACK) if e.outcome == "rolled_back")
        report = experiment_report(conn, experiment.id)
    _open(page, demo, report.partition_path, "verdict")
    page.get_by_text(report.partition, exact=True).first.wait_for()
    _entry(page, "verdict").get_by_text(report.headline, exact=False).wait_for()
    _shot(page, shots, "08-experiment-partition")
