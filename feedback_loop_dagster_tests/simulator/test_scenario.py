"""The demo's truth model: config knobs act on the traffic mechanically, and runs are reproducible."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from feedback_loop_dagster.simulator.scenario import Routing, demo_patterns, simulate_day, window_days

DAY = date(2026, 3, 2)
PATTERNS = {p.pattern_id: p for p in demo_patterns()}


def day_of(pattern_id: str, config: dict, *, seed: int = 1, per_day: int = 2000, degraded=frozenset()) -> pd.DataFrame:
    truth = PATTERNS[pattern_id]
    index = list(PATTERNS).index(pattern_id)
    route = lambda units: Routing("v", config, degraded=frozenset(degraded))  # noqa: E731
    return simulate_day(truth, index, DAY, 3, per_day, seed, route)


def test_same_seed_same_rows_other_seed_other_rows():
    config = PATTERNS["summarise-ticket"].config
    first, again = day_of("summarise-ticket", config), day_of("summarise-ticket", config)
    pd.testing.assert_frame_equal(first, again)
    assert not first["duration_ms"].equals(day_of("summarise-ticket", config, seed=2)["duration_ms"])
    assert len(first) == 2000 and first["execution_id"].is_unique
    assert (first["started_at"].dt.date == DAY).all()


def test_a_longer_timeout_lets_slow_calls_finish():
    short = day_of("summarise-ticket", {"timeout_ms": 1500})
    long = day_of("summarise-ticket", {"timeout_ms": 3000})
    cut = short["status"] == "timeout"
    assert (short.loc[cut, "duration_ms"] == 1500).all() and (short.loc[cut, "error_type"] == "TimeoutError").all()
    assert 0.05 < cut.mean() < 0.2 and (long["status"] == "timeout").mean() < 0.02
    # Common random numbers: calls that finished under both timeouts took the same time.
    both = ~cut & (long["status"] != "timeout")
    assert np.allclose(short.loc[both, "duration_ms"], long.loc[both, "duration_ms"])
    assert (long["status"] == "success").mean() > (short["status"] == "success").mean() + 0.05


def test_more_retries_turn_rate_limits_into_successes_and_are_recorded():
    one = day_of("agent|planner, v2", {"max_retries": 1})
    three = day_of("agent|planner, v2", {"max_retries": 3})
    assert one["retry_count"].max() == 1 and three["retry_count"].max() == 3
    limited_one = (one["error_type"] == "RateLimitError").mean()
    assert limited_one > 0.05 and (three["error_type"] == "RateLimitError").mean() < limited_one / 3
    assert three["retry_count"].mean() > one["retry_count"].mean()
    # Calls that never hit the rate limit do not retry.
    assert (one.loc[one["retry_count"] == 0, "error_type"] != "RateLimitError").all()


def test_cache_effects_are_per_pattern():
    # Neutral: the cache never hits, so turning it on changes nothing at all.
    pd.testing.assert_frame_equal(
        day_of("doc-search", {"cache_ttl_seconds": 0}).drop(columns="pattern_version"),
        day_of("doc-search", {"cache_ttl_seconds": 3600}).drop(columns="pattern_version"),
    )
    # Harmful: repeated calls come back fast but often stale.
    off = day_of("résumé [draft]...", {"cache_ttl_seconds": 0})
    on = day_of("résumé [draft]...", {"cache_ttl_seconds": 3600})
    assert "StaleResultError" not in set(off["error_type"].dropna())
    assert (on["status"] == "success").mean() < (off["status"] == "success").mean() - 0.15
    assert np.exp(np.log(on["duration_ms"]).mean()) < 0.6 * np.exp(np.log(off["duration_ms"]).mean())
    # Only a unit's repeated calls can be cached: first calls of the day are untouched.
    first_calls = on[~on["unit_id"].duplicated(keep="first")]
    merged = first_calls.merge(off, on="execution_id", suffixes=("_on", "_off"))
    assert len(merged) == on["unit_id"].nunique()
    assert (merged["duration_ms_on"] == merged["duration_ms_off"]).all()


def test_degraded_versions_fail_upstream():
    config = PATTERNS["sql-generator"].config
    healthy, degraded = day_of("sql-generator", config), day_of("sql-generator", config, degraded={"v"})
    assert "UpstreamError" not in set(healthy["error_type"].dropna())
    assert (degraded["status"] == "success").mean() < (healthy["status"] == "success").mean() - 0.25


def test_routing_is_per_unit():
    truth = PATTERNS["doc-search"]

    def route(units):
        return Routing("v1", truth.config, "v2", {"cache_ttl_seconds": 3600},
                       in_treatment=np.array([int(u.rsplit("-", 1)[1]) % 2 == 0 for u in units]))

    frame = simulate_day(truth, 2, DAY, 0, 1000, 1, route)
    assert set(frame["pattern_version"]) == {"v1", "v2"}
    assert frame.groupby("unit_id")["pattern_version"].nunique().max() == 1


def test_window_days_end_yesterday_by_default():
    days = window_days(21, end=date(2026, 3, 31))
    assert len(days) == 21 and days[-1] == date(2026, 3, 31) and days[0] == date(2026, 3, 11)
    assert window_days(3)[-1] == datetime.now(UTC).date() - timedelta(days=1)
