"""A pattern's family of versions across four past windows: branches, a merge, a promotion, a
rollback and a running candidate, for the lineage tests (fixture `family` in conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from feedback_loop_dagster.lib.experiment.experiments import start_experiment
from feedback_loop_dagster.lib.registry.edges import add_edge
from feedback_loop_dagster.lib.registry.versions import ACTIVE, register_version, set_label
from feedback_loop_dagster.lib.stats import get_preset
from feedback_loop_dagster.lib.storage import tables

TODAY = datetime.now(UTC).date()
# Windows in the past, versions created today: what a backfill of old windows sees.
W0, W1, W2, W3 = (TODAY - timedelta(days=10 - i) for i in range(4))
P = "code-review"


def usage(conn, pattern_id, version, day, n, ok):
    conn.execute(
        tables.daily_version_stats.insert().values(
            pattern_id=pattern_id, version=version, day=day, pattern_key=pattern_id, executions=n, success_n=n,
            success_count=ok, latency_n=0, latency_log_sum=0.0, latency_log_sum_sq=0.0, quality_n=0,
            quality_sum=0.0, quality_sum_sq=0.0, rating_n=0, rating_sum=0.0, rating_sum_sq=0.0, retries_n=0,
            retries_sum=0.0, retries_sum_sq=0.0, error_counts={},
        )
    )


def family_of_versions(engine):
    """v1 -> v2 (promoted in W1, rolled back in W2), v1 -> v3 (a branch), v4 = v2 + merged v3 (a
    running candidate from W3), v5 made active by hand in W3 after the experiment is stopped."""
    with engine.begin() as conn:
        v1 = register_version(conn, P, "v1", {"timeout_ms": 1000, "model": {"name": "small"}}, source="manual")
        set_label(conn, P, ACTIVE, v1.id, None)
        v2 = register_version(conn, P, "v2", {"timeout_ms": 2000, "model": {"name": "small"}}, parent_id=v1.id, source="proposal")
        add_edge(conn, v2.id, v1.id, "derived_from", {"proposal_id": 7}, window_start=W0)
        v3 = register_version(conn, P, "v3", {"timeout_ms": 1000, "model": {"name": "large"}}, parent_id=v1.id)
        add_edge(conn, v3.id, v1.id, "derived_from", window_start=W0)
        v4 = register_version(conn, P, "v4", {"timeout_ms": 2000, "model": {"name": "large"}, "retries": 2}, parent_id=v2.id)
        add_edge(conn, v4.id, v2.id, "derived_from", window_start=W2)
        add_edge(conn, v4.id, v3.id, "merged_from", {"user": "ana"}, window_start=W2)
        add_edge(conn, v2.id, v1.id, "promoted_over",
                 {"experiment_id": 1, "p_value": 0.003, "performance_delta": 0.12}, window_start=W1)
        set_label(conn, P, ACTIVE, v2.id, W1)
        add_edge(conn, v2.id, v1.id, "rolled_back_to",
                 {"experiment_id": 2, "p_value": 0.001, "performance_delta": -0.08}, window_start=W2)
        set_label(conn, P, ACTIVE, v1.id, W2)
        start_experiment(conn, P, v1, v4, get_preset("development"), W3)
        for day, (n1, n2) in zip((W0, W1, W2), ((100, 0), (20, 80), (90, 10)), strict=True):
            usage(conn, P, "v1", day, n1, n1 - 5)
            if n2:
                usage(conn, P, "v2", day, n2, n2 // 2)
    return {v.version: v for v in (v1, v2, v3, v4)}
