"""Analysis (daily statistics, metrics, regressions) and proposals (analyzers, dedupe, plug-ins)."""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from feedback_loop_dagster.lib.analyze.analysis import analyze_partitions
from feedback_loop_dagster.lib.analyze.daily import arm_stats, daily_stats
from feedback_loop_dagster.lib.collect.collector import collect_feedback
from feedback_loop_dagster.lib.propose import analyzers as analyzer_registry
from feedback_loop_dagster.lib.propose.analyzers import ProposalDraft, analyzer, registered_analyzers
from feedback_loop_dagster.lib.propose.proposals import propose
from feedback_loop_dagster.lib.registry.versions import register_version
from feedback_loop_dagster.lib.stats import ArmStats
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster_tests.factories import insert_executions
from feedback_loop_dagster_tests.loop.traffic import PATTERN, POLICY, START, load, traffic


def test_daily_statistics_add_up_to_the_statistics_of_all_rows():
    rng = np.random.default_rng(3)
    n = 500
    frame = pd.DataFrame(
        {
            "pattern_id": PATTERN, "pattern_key": PATTERN, "pattern_version": "v1",
            "window_start": [START + timedelta(days=int(d)) for d in rng.integers(0, 4, n)],
            "status": rng.choice(["success", "failure", "in_progress"], n, p=[0.8, 0.15, 0.05]),
            "duration_ms": rng.lognormal(6, 0.5, n), "quality_score": rng.random(n),
            "user_rating": np.where(rng.random(n) < 0.3, rng.random(n), np.nan),
            "retry_count": rng.integers(0, 3, n), "error_type": None,
        }
    )
    days = daily_stats(frame)
    assert len(days) == 4
    summed = arm_stats(days.sum(numeric_only=True).to_dict())
    whole = ArmStats.from_frame(frame)
    assert summed.executions == whole.executions
    assert (summed.success.n, summed.success.successes) == (whole.success.n, whole.success.successes)
    for metric in ("latency", "quality", "rating", "retries"):
        assert summed.get(metric).n == whole.get(metric).n
        assert summed.get(metric).mean == pytest.approx(whole.get(metric).mean, rel=1e-9)
        assert summed.get(metric).variance == pytest.approx(whole.get(metric).variance, rel=1e-9)


def test_a_significant_drop_is_a_regression_and_noise_is_not(engine):
    days = [(d, traffic(START + timedelta(days=d), 300, 0.95, seed=d)) for d in range(3)]
    days += [(d, traffic(START + timedelta(days=d), 300, 0.80, seed=d)) for d in range(3, 6)]
    pairs = load(engine, days)
    report = analyze_partitions(engine, pairs)
    by_window = {row.window_start: json.loads(row.regressions) for row in report.metrics.itertuples()}
    assert by_window[START + timedelta(days=5)] == ["success"]
    assert by_window[START + timedelta(days=2)] == []  # no previous period yet
    row = report.metrics[report.metrics["window_start"] == START + timedelta(days=5)].iloc[0]
    assert row.executions == 900 and 0.75 < row.success_rate < 0.85
    assert row.latency_p50 < row.latency_p95 < row.latency_p99
    # Re-analysing gives the same rows (idempotent).
    again = analyze_partitions(engine, pairs)
    pd.testing.assert_frame_equal(report.metrics.reset_index(drop=True), again.metrics.reset_index(drop=True))


def test_timeout_proposal_has_a_patch_and_a_delta_estimated_from_the_data(engine):
    days = [(d, traffic(START + timedelta(days=d), 300, 0.85, timeout_rate=0.10, seed=d)) for d in range(3)]
    pairs = load(engine, days)
    analyze_partitions(engine, pairs)
    window = pairs[-1][1]
    with engine.begin() as conn:
        outcome = propose(conn, PATTERN, window, POLICY)
        again = propose(conn, PATTERN, window + timedelta(days=1), POLICY)
        proposals = conn.execute(sa.select(tables.proposals)).mappings().all()
    assert len(outcome.created) == 1 and again.created == [] and again.seen_again == outcome.created
    (proposal,) = proposals
    assert proposal["patch"] == {"timeout_ms": 4000}
    evidence = proposal["evidence"]
    # The delta is the timeout share times the share of timeouts a doubled timeout lets finish.
    assert proposal["expected_delta"] == pytest.approx(evidence["timeout_share"] * evidence["recoverable_share"])
    assert proposal["expected_delta_low"] < proposal["expected_delta"] < proposal["expected_delta_high"]
    assert 0.08 < evidence["timeout_share"] < 0.12


def test_more_timeouts_mean_a_larger_expected_delta(engine):
    deltas = []
    for rate in (0.05, 0.15):
        with engine.begin() as conn:
            conn.execute(tables.proposals.delete())
        evidence_days = [(0, traffic(START, 400, 0.8, timeout_rate=rate, seed=int(rate * 100)))]
        with engine.begin() as conn:
            conn.execute(tables.hook_executions.delete())
        pairs = load(engine, evidence_days)
        analyze_partitions(engine, pairs)
        with engine.begin() as conn:
            propose(conn, PATTERN, START, POLICY)
            deltas.append(conn.scalar(sa.select(tables.proposals.c.expected_delta)))
    assert deltas[1] > 2 * deltas[0]


def test_a_custom_analyzer_plugs_in_by_decorator(engine):
    pairs = load(engine, [(0, traffic(START, 100, 0.9, seed=1))])
    analyze_partitions(engine, pairs)

    @analyzer("always_suggest_cache")
    def always_suggest_cache(evidence):
        return [
            ProposalDraft(
                analyzer="always_suggest_cache", kind="performance", title="Try a cache", metric="latency",
                expected_delta=evidence.stats.success.mean / 10, expected_delta_low=0.0,
                expected_delta_high=evidence.stats.success.mean / 5, risk="medium", patch={"cache_ttl_seconds": 60},
            )
        ]

    try:
        assert "always_suggest_cache" in registered_analyzers()
        with engine.begin() as conn:
            outcome = propose(conn, PATTERN, START, POLICY)
            kinds = conn.execute(sa.select(tables.proposals.c.analyzer)).scalars().all()
        assert outcome.created and "always_suggest_cache" in kinds
    finally:
        analyzer_registry.unregister("always_suggest_cache")
    assert "always_suggest_cache" not in registered_analyzers()


def test_a_custom_analyzer_plugs_in_by_entry_point(tmp_path, monkeypatch):
    package = tmp_path / "my_analyzers.py"
    package.write_text("def noop(evidence):\n    return []\n")
    dist = tmp_path / "my_analyzers-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-analyzers\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{analyzer_registry.ENTRY_POINT_GROUP}]\nnoop = my_analyzers:noop\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = registered_analyzers()
    assert found["noop"].__module__ == "my_analyzers"
    sys.modules.pop("my_analyzers", None)


def test_a_proposal_for_an_older_active_version_is_superseded(engine):
    days = [(d, traffic(START + timedelta(days=d), 300, 0.85, timeout_rate=0.10, seed=d)) for d in range(2)]
    pairs = load(engine, days)
    analyze_partitions(engine, pairs)
    from feedback_loop_dagster.lib.registry.versions import ACTIVE, get_label, set_label

    with engine.begin() as conn:
        propose(conn, PATTERN, pairs[-1][1], POLICY)
        v1 = get_label(conn, PATTERN, ACTIVE)
        v2 = register_version(conn, PATTERN, "v2", {"timeout_ms": 9000}, parent_id=v1.id)
        set_label(conn, PATTERN, ACTIVE, v2.id, None)
        outcome = propose(conn, PATTERN, pairs[-1][1], POLICY)
    assert outcome.superseded == 1


def test_a_pattern_whose_id_is_not_a_partition_key_is_analysed(engine):
    nasty = "agent|planner, v2"
    rows = traffic(START, 100, 0.9, seed=4)
    for row in rows:
        row["pattern_id"] = nasty
    insert_executions(engine, rows)
    key = register_pattern_ids(engine, [nasty])[nasty]
    collect_feedback(engine, engine, [(key, START)])
    report = analyze_partitions(engine, [(key, START)])
    assert list(report.metrics["pattern_id"]) == [nasty] and report.metrics["executions"].iloc[0] == 100


@pytest.mark.both_dialects
def test_the_analysis_reads_a_patterns_feedback_through_the_primary_key(engine):
    """One range of the primary key per pattern, not a scan of every pattern's rows (which grew
    with the history and made a long backfill quadratic). Scans are priced out first, so a plan
    without a usable index still shows one whatever the table's size."""
    from feedback_loop_dagster.lib.analyze.analysis import feedback_query

    query = feedback_query("some-pattern", START, START + timedelta(days=13))
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SET enable_seqscan = off"))
            plan = " ".join(conn.execute(sa.text(f"EXPLAIN {sql}")).scalars())
            assert "Index Cond: ((pattern_key = " in plan and "Filter" not in plan, plan
        else:
            plan = " ".join(row[-1] for row in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {sql}")))
            assert "USING INDEX" in plan and "SCAN feedback" not in plan, plan
