"""End to end: the demo's scenario run through Dagster over simulated days.

Every simulated day's traffic follows the registry and the whole loop (collect -> ... -> apply)
is materialised for that day before the next one is simulated; the planted truths must come out:
true improvements promoted, the harmful candidate rejected, the neutral one ended inconclusive
(control kept), the promotion that degrades rolled back, and the monitoring pattern left alone.

The scenario's size and seed are in demo_scenario.py (why that size suffices). The Dagster instance
is the in-memory test instance, whose event log is about ten times cheaper per event than
instance_for_test's SQLite files.
"""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.lib.experiment.assignment import assign_variant
from feedback_loop_dagster.lib.experiment.experiments import list_experiments, running_experiment
from feedback_loop_dagster.lib.registry.versions import ACTIVE, get_label, list_versions
from feedback_loop_dagster.lib.report.health import health_report, load_history
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import get_engine
from feedback_loop_dagster.simulator.demo import format_table, run_demo
from feedback_loop_dagster.simulator.scenario import demo_patterns, window_days
from feedback_loop_dagster_tests.demo_scenario import DAYS, NEUTRAL_DAYS, PER_DAY, SEED, scenario_patterns


def _edges(conn, pattern_id: str) -> list[str]:
    e = tables.lineage_edges
    return list(conn.scalars(sa.select(e.c.edge_type).where(e.c.pattern_id == pattern_id).order_by(e.c.id)))


@pytest.mark.e2e
def test_demo_scenario_end_to_end(migrated_url):
    engine = get_engine(migrated_url)
    progress: list[str] = []
    with dg.DagsterInstance.ephemeral() as instance:
        rows = run_demo(
            build_definitions(FeedbackDatabases(database_url=migrated_url)), instance, engine, engine,
            days=DAYS, per_day=PER_DAY, seed=SEED, patterns=scenario_patterns(), progress=progress.append,
        )
        runs = instance.get_runs()
    by_id = {r.pattern_id: r for r in rows}
    assert len(runs) == DAYS and all(r.is_success for r in runs), "one successful range run per simulated day"
    assert len(progress) == DAYS

    planted = {p.pattern_id: p.expected for p in demo_patterns()}
    assert {r.pattern_id: r.expected for r in rows} == planted
    for row in rows:
        assert row.match, f"{row.pattern_id}: expected {row.expected}, the loop says {row.actual} ({row.reason})"
    assert f"{len(rows)}/{len(rows)} planted outcomes met" in format_table(rows)

    with engine.connect() as conn:
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

    _assert_traffic_followed_the_registry(engine, window_days(DAYS)[-1])
    _assert_health_shows_the_demo(engine, window_days(DAYS)[-1])


def _assert_health_shows_the_demo(engine, last_day) -> None:
    """Loop health as of the last day: three promotions (one rolled back), one rejection, the
    neutral experiment running or inconclusive, nothing for the monitored pattern."""
    with engine.connect() as conn:
        per_pattern, overall = health_report(load_history(conn), last_day)
    assert (overall.promotions, overall.rolled_back, overall.confirmed + overall.under_watch) == (3, 1, 2)
    assert overall.rejected == 1 and overall.running + overall.inconclusive == 1
    assert set(overall.mean_effect) == {"success"} and overall.mean_effect["success"]["value"] > 0
    by_id = {h.pattern_id: h for h in per_pattern}
    assert by_id["sql-generator"].false_positive_rate == 1.0 and by_id["résumé [draft]..."].rejection_rate == 1.0
    assert by_id["doc-search"].running + by_id["doc-search"].inconclusive == 1
    assert by_id["incident-triage"].promotions == by_id["incident-triage"].ab_ended == 0


def _assert_traffic_followed_the_registry(engine, last_day) -> None:
    f = tables.feedback
    with engine.connect() as conn:

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
            assert assign_variant("summarise-ticket", unit_id, engine) == version
        # No experiment: everything runs the active version (v1 again after the rollback).
        assert {v for _, v in executions("sql-generator")} == {"v1"}
        assert {v for _, v in executions("incident-triage")} == {"v1"}
