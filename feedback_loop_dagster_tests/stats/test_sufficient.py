"""Mergeable sufficient statistics: merging equals computing on the union."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedback_loop_dagster.lib.stats import ArmStats, LogMeanStats, MeanStats, ProportionStats
from feedback_loop_dagster.lib.stats.sufficient import mean_var, moments

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
values = st.lists(finite, min_size=0, max_size=40)
positive = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
bools = st.lists(st.booleans(), max_size=60)


def _close_var(a: float, b: float, xs: np.ndarray) -> bool:
    scale = float(np.mean(xs * xs)) if xs.size else 1.0
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * max(1.0, scale))


@settings(deadline=None, max_examples=150)
@given(values, values)
def test_mean_stats_merge_equals_union(a, b):
    merged = MeanStats.from_values(a) + MeanStats.from_values(b)
    union = np.asarray(a + b, dtype=float)
    direct = MeanStats.from_values(union)
    assert merged.n == direct.n == len(union)
    if union.size:
        assert math.isclose(merged.mean, float(np.mean(union)), rel_tol=1e-9, abs_tol=1e-9)
    if union.size >= 2:
        assert _close_var(merged.variance, float(np.var(union, ddof=1)), union)
    else:
        assert merged.variance == 0.0


@settings(deadline=None, max_examples=100)
@given(bools, bools)
def test_proportion_stats_merge_equals_union(a, b):
    merged = ProportionStats.from_values(a) + ProportionStats.from_values(b)
    direct = ProportionStats.from_values(a + b)
    assert merged == direct
    assert merged.successes == sum(a) + sum(b)


@settings(deadline=None, max_examples=100)
@given(st.lists(positive, max_size=30), st.lists(positive, max_size=30))
def test_log_mean_stats_merge_equals_union_and_geometric_mean(a, b):
    merged = LogMeanStats.from_durations(a) + LogMeanStats.from_durations(b)
    assert isinstance(merged, LogMeanStats)
    union = np.asarray(a + b, dtype=float)
    assert merged.n == union.size
    if union.size:
        gm = float(np.exp(np.mean(np.log(union))))
        assert math.isclose(merged.geometric_mean, gm, rel_tol=1e-9)


def test_mean_var_variance_matches_numpy_and_guards_constant_data():
    xs = np.array([0.7] * 50)
    s = MeanStats.from_values(xs)
    assert s.variance == 0.0  # rounding residue removed, not 1e-17
    assert mean_var(1, 3.0, 9.0) == (3.0, 0.0)
    assert mean_var(0, 0.0, 0.0) == (0.0, 0.0)
    ys = np.array([1.0, 2.0, 4.0, 8.0])
    assert math.isclose(MeanStats.from_values(ys).variance, float(np.var(ys, ddof=1)), rel_tol=1e-12)
    assert moments(None) == (0, 0.0, 0.0)
    assert moments(ProportionStats(10, 3)) == (10, 0.3, 0.3 * 0.7)


def test_nan_none_inf_are_ignored_and_nonpositive_durations_dropped():
    s = MeanStats.from_values([1.0, None, float("nan"), 3.0, float("inf")])
    assert (s.n, s.total, s.total_sq) == (2, 4.0, 10.0)
    lat = LogMeanStats.from_durations([100.0, 0.0, -5.0, None, 1000.0])
    assert lat.n == 2
    assert math.isclose(lat.geometric_mean, math.sqrt(100.0 * 1000.0))
    nullable = pd.Series([0.5, None, 0.7], dtype="Float64")
    assert MeanStats.from_values(nullable).n == 2


def test_from_aggregates_treats_sql_nulls_as_empty():
    assert MeanStats.from_aggregates(None, None, None) == MeanStats()
    assert ProportionStats.from_aggregates(10, None) == ProportionStats(10, 0)
    s = MeanStats.from_aggregates(3, 6.0, 14.0)
    assert s.mean == 2.0 and s.variance == 1.0


def test_invalid_statistics_are_rejected():
    with pytest.raises(ValueError):
        ProportionStats(3, 4)
    with pytest.raises(ValueError):
        MeanStats(-1, 0.0, 0.0)
    with pytest.raises(ValueError):
        ProportionStats.from_values([0, 1, 2])
    with pytest.raises(TypeError):
        _ = MeanStats(1, 1.0, 1.0) + LogMeanStats(1, 1.0, 1.0)  # different scales never mix


def test_sum_builtin_and_none_are_neutral():
    parts = [MeanStats.from_values([1, 2]), MeanStats.from_values([3])]
    assert sum(parts) == MeanStats.from_values([1, 2, 3])
    assert ProportionStats(2, 1) + None == ProportionStats(2, 1)


def _frame(rng, n):
    status = rng.choice(["success", "failure", "error", "in_progress"], size=n, p=[0.7, 0.15, 0.1, 0.05])
    dur = rng.lognormal(6.0, 0.5, n)
    dur[rng.random(n) < 0.1] = np.nan
    dur[rng.random(n) < 0.02] = 0.0
    q = rng.random(n)
    q[rng.random(n) < 0.3] = np.nan
    return pd.DataFrame({
        "status": status,
        "duration_ms": dur,
        "quality_score": q,
        "user_rating": np.where(rng.random(n) < 0.5, rng.random(n), np.nan),
        "retry_count": rng.poisson(0.3, n),
    })


def test_arm_stats_from_frame_and_merge_of_days_equals_whole():
    rng = np.random.default_rng(7)
    day1, day2 = _frame(rng, 200), _frame(rng, 150)
    whole = ArmStats.from_frame(pd.concat([day1, day2], ignore_index=True))
    merged = ArmStats.from_frame(day1) + ArmStats.from_frame(day2)
    assert merged.executions == whole.executions == 350
    assert merged.success == whole.success
    for name in ("latency", "quality", "rating", "retries"):
        a, b = getattr(merged, name), getattr(whole, name)
        assert a.n == b.n
        assert math.isclose(a.total, b.total, rel_tol=1e-12)
        assert math.isclose(a.total_sq, b.total_sq, rel_tol=1e-12)
    # semantics of each metric
    both = pd.concat([day1, day2], ignore_index=True)
    done = both[both.status != "in_progress"]
    assert whole.success == ProportionStats(len(done), int((done.status == "success").sum()))
    ok = both.duration_ms[(both.duration_ms > 0) & both.duration_ms.notna()]
    assert whole.latency.n == len(ok)
    assert math.isclose(whole.latency.mean, float(np.log(ok).mean()), rel_tol=1e-12)
    assert whole.quality.n == int(both.quality_score.notna().sum())


def test_arm_stats_dict_round_trip_and_aggregates():
    rng = np.random.default_rng(1)
    arm = ArmStats.from_frame(_frame(rng, 60))
    assert ArmStats.from_dict(arm.to_dict()) == arm
    row = {"executions": 5, "success_n": 5, "success_count": 4, "latency_n": 5, "latency_log_sum": 30.0,
           "latency_log_sum_sq": 181.0}
    agg = ArmStats.from_aggregates(row)
    assert agg.success == ProportionStats(5, 4)
    assert isinstance(agg.latency, LogMeanStats) and agg.latency.n == 5
    assert agg.quality is None
    assert ArmStats.sum([agg, agg]).executions == 10


def test_counts_must_be_whole_numbers_and_are_plain_ints():
    with pytest.raises(ValueError, match="whole number"):
        MeanStats(2.5, 1.0, 1.0)
    s = ProportionStats(np.int64(4), np.int64(2))
    assert type(s.n) is int and type(s.successes) is int
    with pytest.raises(ValueError):
        ArmStats(-1)
