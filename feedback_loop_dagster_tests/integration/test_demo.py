"""The demo, end to end: its scenario run once into a deployment, then checked twice -- the planted
outcomes in the warehouse and the instance, and the Dagster UI in a real browser as a new user sees it.

The scenario (six patterns, each planting one outcome; its size and seed in demo_scenario.py) runs
in-process into a fresh deployment over PostgreSQL, as `make demo` does: every simulated day's
traffic follows the registry and the whole loop (collect -> ... -> apply) is materialised for that
day before the next one is simulated. The planted truths must come out: true improvements promoted,
the harmful candidate rejected, the neutral one ended inconclusive (control kept), the promotion that
degrades rolled back, and the monitoring pattern left alone.

Then the webserver starts, as `make ui` does, so its partitions start at the demo's first day, and
headless Chromium (Debian's /usr/bin/chromium) driven by Playwright checks issue 11 page by page:
each partition shows its own figures, the A/B verdict and interval are readable without scrolling or
a click, every pattern has a lineage picture shown at its legible size, the health page shows the
demo's figures, the job's Runs tab lists the demo's runs, the partition bars are mostly
materialised, and the global graph reads in loop order at 1,600 px. Without Chromium only the
browser tests skip (fail under CI=true); the scenario's are checked all the same.

Screenshots: one per page, in $FEEDBACK_LOOP_UI_ARTIFACTS or else a folder of the pytest session's
temporary directory; the folder is printed in the test output.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.in_process_runs.runs import run_handle
from feedback_loop_dagster.lib.experiment.assignment import assign_variant
from feedback_loop_dagster.lib.experiment.experiments import experiments_as_of, list_experiments, running_experiment
from feedback_loop_dagster.lib.registry.versions import ACTIVE, get_label, list_versions
from feedback_loop_dagster.lib.report.experiment import headline
from feedback_loop_dagster.lib.report.health import health_as_of, health_report, health_row, load_history
from feedback_loop_dagster.lib.safe_partition_key import safe_partition_key
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import get_engine
from feedback_loop_dagster.lib.validate.ab_results import stored_results
from feedback_loop_dagster.simulator.demo import DemoRow, format_table, run_demo
from feedback_loop_dagster.simulator.scenario import demo_patterns, window_days
from feedback_loop_dagster_tests.conftest import postgres_admin_url
from feedback_loop_dagster_tests.demo_scenario import DAYS, NEUTRAL_DAYS, PER_DAY, SEED, scenario_patterns
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


@dataclass
class Demo:
    """The deployment the demo ran into, and what the demo returned and printed."""

    deployment: Deployment
    engine: sa.Engine
    rows: dict[str, DemoRow]
    table: list[DemoRow]
    progress: list[str]
    last_day: date

    @property
    def url(self) -> str:
        return self.deployment.url


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A deployment holding the demo's runs and data; no process serves it yet."""
    with Deployment(tmp_path_factory.mktemp("demo-deployment"), postgres_admin_url()) as deployment:
        engine = get_engine(deployment.warehouse_url)
        progress: list[str] = []
        # One handle for the whole demo, as `make demo` has (see run_handle)
        with run_handle(deployment.instance) as instance:
            rows = run_demo(build_definitions(FeedbackDatabases(database_url=deployment.warehouse_url)), instance, engine, engine,
                            days=DAYS, per_day=PER_DAY, seed=SEED, patterns=scenario_patterns(), progress=progress.append)
        with engine.connect() as conn:
            last_day = conn.scalar(sa.select(sa.func.max(tables.feedback_partitions.c.window_start)))
        yield Demo(deployment, engine, {r.pattern_id: r for r in rows}, rows, progress, last_day)


# --- the planted outcomes ----------------------------------------------------------------------


def _edges(conn, pattern_id: str) -> list[str]:
    e = tables.lineage_edges
    return list(conn.scalars(sa.select(e.c.edge_type).where(e.c.pattern_id == pattern_id).order_by(e.c.id)))


def test_every_planted_outcome_comes_out(demo):
    runs = demo.deployment.instance.get_runs()  # the deployment's instance holds the demo's runs only
    assert len(runs) == DAYS and all(r.is_success for r in runs), "one successful range run per simulated day"
    assert len(demo.progress) == DAYS

    planted = {p.pattern_id: p.expected for p in demo_patterns()}
    assert {r.pattern_id: r.expected for r in demo.table} == planted
    for row in demo.table:
        assert row.match, f"{row.pattern_id}: expected {row.expected}, the loop says {row.actual} ({row.reason})"
    assert f"{len(demo.table)}/{len(demo.table)} planted outcomes met" in format_table(demo.table)


def test_the_improvements_are_promoted_and_the_harmful_candidate_rejected(demo):
    by_id = demo.rows
    with demo.engine.connect() as conn:
        # True improvements: promoted, the candidate is active, the promotion is under watch or confirmed.
        for pattern_id in ("summarise-ticket", "agent|planner, v2"):
            row = by_id[pattern_id]
            assert row.actual == "promoted" and row.active == "v2"
            assert row.lead_metric == "success" and row.effect["ci_lower"] > 0
            assert get_label(conn, pattern_id, ACTIVE).version == "v2"
            assert _edges(conn, pattern_id)[:2] == ["derived_from", "promoted_over"]
            assert "rolled_back_to" not in _edges(conn, pattern_id)

        # Harmful: rejected on the success guardrail although it is much faster; never active.
        harmful = by_id["résumé [draft]..."]
        assert harmful.actual == "rejected" and harmful.active == "v1"
        assert "guardrail breach: success rate" in harmful.reason
        assert harmful.lead_metric == "latency" and harmful.effect["relative_improvement"] > 0.3
        assert "promoted_over" not in _edges(conn, "résumé [draft]...")


def test_the_neutral_one_ends_inconclusive_the_degraded_one_rolls_back_monitoring_has_no_experiment(demo):
    by_id = demo.rows
    with demo.engine.connect() as conn:
        # Neutral: ends without a decision when its time is up; v1 stays active, v2 is archived and
        # its proposal settled, so the same change is not tried again.
        neutral = by_id["doc-search"]
        assert neutral.actual == "inconclusive" and neutral.active == "v1"
        assert neutral.reason.startswith(f"inconclusive: no decision after {NEUTRAL_DAYS} days")
        assert "promoted_over" not in _edges(conn, "doc-search")
        d, p = tables.decisions, tables.proposals
        assert conn.execute(sa.select(d.c.action, d.c.status).where(d.c.pattern_id == "doc-search")).all() == [
            ("keep", "done")
        ]
        assert "inconclusive" in conn.scalars(sa.select(p.c.status).where(p.c.pattern_id == "doc-search")).all()

        # Degraded after promotion: promoted, then rolled back by the watch on the success metric.
        degraded = by_id["sql-generator"]
        assert degraded.actual == "rolled back" and degraded.active == "v1"
        assert degraded.lead_metric == "success" and degraded.effect["ci_upper"] < 0
        assert _edges(conn, "sql-generator") == ["derived_from", "promoted_over", "rolled_back_to"]
        # ... and the same change is not proposed and tried again on v1.
        assert [v.version for v in list_versions(conn, "sql-generator")] == ["v1", "v2"]

        # Monitoring: proposals are recorded, but no experiment and no new version.
        monitored = by_id["incident-triage"]
        assert monitored.actual == "no experiment" and monitored.active == "v1"
        assert list_experiments(conn, "incident-triage") == []
        assert [v.version for v in list_versions(conn, "incident-triage")] == ["v1"]
        proposals = conn.scalar(
            sa.select(sa.func.count()).select_from(tables.proposals).where(tables.proposals.c.pattern_id == "incident-triage")
        )
        assert proposals >= 1


def test_the_traffic_followed_the_registry(demo):
    last_day = window_days(DAYS)[-1]
    f = tables.feedback
    with demo.engine.connect() as conn:

        def executions(pattern_id: str):
            return conn.execute(
                sa.select(f.c.unit_id, f.c.pattern_version).where(f.c.pattern_id == pattern_id, f.c.window_start == last_day)
            ).all()

        # A running experiment (the watch of a promotion, 80/20): every unit ran exactly the arm
        # `assign_variant` gives it today.
        assert running_experiment(conn, "summarise-ticket") is not None
        seen = executions("summarise-ticket")
        assert {v for _, v in seen} == {"v1", "v2"}
        for unit_id, version in seen[:200]:
            assert assign_variant("summarise-ticket", unit_id, demo.engine) == version
        # No experiment: everything runs the active version (v1 again after the rollback).
        assert {v for _, v in executions("sql-generator")} == {"v1"}
        assert {v for _, v in executions("incident-triage")} == {"v1"}


def test_the_loop_health_shows_the_demo(demo):
    """Loop health as of the last day: three promotions (one rolled back), one rejection, the
    neutral experiment running or inconclusive, nothing for the monitored pattern."""
    with demo.engine.connect() as conn:
        per_pattern, overall = health_report(load_history(conn), window_days(DAYS)[-1])
    assert (overall.promotions, overall.rolled_back, overall.confirmed + overall.under_watch) == (3, 1, 2)
    assert overall.rejected == 1 and overall.running + overall.inconclusive == 1
    assert set(overall.mean_effect) == {"success"} and overall.mean_effect["success"]["value"] > 0
    by_id = {h.pattern_id: h for h in per_pattern}
    assert by_id["sql-generator"].false_positive_rate == 1.0 and by_id["résumé [draft]..."].rejection_rate == 1.0
    assert by_id["doc-search"].running + by_id["doc-search"].inconclusive == 1
    assert by_id["incident-triage"].promotions == by_id["incident-triage"].ab_ended == 0


# --- the UI ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def webserver(demo):
    """The demo's deployment served by a webserver started after the demo, when a browser can look at it."""
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM}: apt-get install chromium"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    demo.deployment.start_webserver()
    return demo


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
def page(webserver):
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
    effect = re.compile(  # the effect, its [low, high] interval in pts, and its verdict
        r"; success rate [+-]\d+\.\d pts \[[+-]\d+\.\d, [+-]\d+\.\d\]"
        r"( \(this look's estimate; the interval is narrowed by earlier looks\))?, worse; p="
    )
    for text in expected:  # the verdict, the effect and its interval, p, n
        assert effect.search(text), text
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
    runs = demo.deployment.instance.get_runs()
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
