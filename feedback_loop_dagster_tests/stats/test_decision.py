"""The decision rule: direction, guardrails, SRM, gates, Holm, review, JSON."""

from __future__ import annotations

import json
import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from feedback_loop_dagster.lib.stats import (
    DECISIONS,
    ArmStats,
    ExperimentResult,
    LogMeanStats,
    MeanStats,
    Policy,
    ProportionStats,
    evaluate_experiment,
    evaluate_metric,
    holm_adjust,
)
from feedback_loop_dagster.lib.stats.units import format_effect


def mean_stats(n: int, mean: float, sd: float, cls=MeanStats):
    """Statistics of n values with this mean and sample sd (what SQL aggregates give)."""
    return cls(n, n * mean, (n - 1) * sd * sd + n * mean * mean)


def arm(n=1000, success=0.9, latency_ms=1000.0, latency_sd=0.5, quality=0.7, quality_sd=0.15,
        rating=None, retries=None, executions=None):
    return ArmStats(
        executions=n if executions is None else executions,
        success=None if success is None else ProportionStats(n, round(success * n)),
        latency=None if latency_ms is None else mean_stats(n, math.log(latency_ms), latency_sd, LogMeanStats),
        quality=None if quality is None else mean_stats(n, quality, quality_sd),
        rating=None if rating is None else mean_stats(n, rating, 0.2),
        retries=None if retries is None else mean_stats(n, retries, 0.5),
    )


PERF = Policy(feedback_type="performance")


def test_latency_improvement_is_applied_with_seed_fields():
    r = evaluate_experiment(arm(), arm(latency_ms=850.0), PERF)
    assert r.decision == "apply" and r.recommendation == "apply" and not r.needs_review
    assert r.lead_metric == "latency" and r.primary_metrics == ("latency",)
    lat = r.metrics["latency"]
    assert lat.significant_improvement and not lat.significant_harm
    assert lat.relative_effect == pytest.approx(-0.15, rel=1e-9)
    assert r.performance_delta == pytest.approx(0.15, rel=1e-9)  # positive = better (faster)
    assert r.p_value == lat.p_value
    assert r.confidence_score == 1.0 - r.p_value
    assert r.statistically_significant is True
    assert r.sample_size == 2000 and (r.n_control, r.n_treatment) == (1000, 1000)
    # effects in their own unit, treatment minus control, with the verdict in words
    assert r.reason.startswith("latency -15.0% [") and "(1000 -> 850 ms), better" in r.reason
    assert "guardrails non-inferior: success rate 0.0 pts [" in r.reason and ", margin -5.0 pts)" in r.reason
    assert "n=1000/1000; 95% CS" in r.reason


def test_latency_regression_is_rejected_never_applied():
    r = evaluate_experiment(arm(), arm(latency_ms=1150.0), PERF)
    assert r.decision == "reject"
    assert r.metrics["latency"].significant_harm
    assert r.performance_delta == pytest.approx(-0.15, rel=1e-9)
    assert "significant harm" in r.reason


def test_swapping_arms_flips_the_decision():
    a, b = arm(), arm(latency_ms=850.0)
    assert evaluate_experiment(a, b, PERF).decision == "apply"
    assert evaluate_experiment(b, a, PERF).decision == "reject"


@pytest.mark.parametrize("q,expected", [(0.75, "apply"), (0.65, "reject"), (0.701, "continue")])
def test_quality_feedback_type(q, expected):
    r = evaluate_experiment(arm(), arm(quality=q), Policy(feedback_type="quality"))
    assert r.decision == expected
    assert r.primary_metrics == ("quality",)


@pytest.mark.parametrize("ftype", ["reliability", "usage"])
def test_reliability_and_usage_use_the_success_rate(ftype):
    r = evaluate_experiment(arm(success=0.85), arm(success=0.92), Policy(feedback_type=ftype))
    assert r.decision == "apply" and r.lead_metric == "success"
    assert r.performance_delta == pytest.approx(0.92 / 0.85 - 1, rel=1e-9)
    assert "success rate +7.0 pts" in r.reason


def test_guardrail_breach_rejects_an_improvement():
    r = evaluate_experiment(arm(success=0.95), arm(success=0.85, latency_ms=800.0), PERF)
    assert r.metrics["latency"].significant_improvement
    assert r.metrics["success"].guardrail_status == "breach"
    assert r.decision == "reject"
    assert "guardrail breach" in r.reason and "success rate" in r.reason


def test_guardrail_statuses():
    margins = {"quality": 0.02}
    # quality unchanged with a tight interval: non-inferiority shown
    ok = evaluate_experiment(arm(n=20000), arm(n=20000, latency_ms=900.0), Policy(feedback_type="performance",
                                                                                  guardrail_margins=margins))
    assert ok.metrics["quality"].guardrail_status == "ok"
    assert ok.metrics["quality"].role == "guardrail" and ok.metrics["quality"].margin == 0.02
    # latency margin is on the ratio: 30% slower on a tight interval breaches the 10% margin
    br = evaluate_experiment(arm(n=5000), arm(n=5000, latency_ms=1300.0, quality=0.72), Policy(feedback_type="quality"))
    assert br.metrics["latency"].guardrail_status == "breach" and br.decision == "reject"
    assert "guardrail breach: latency +30.0% [" in br.reason and "worse, beyond its +10.0% margin" in br.reason


def test_no_significant_harm_yet_is_not_enough_to_apply():
    # latency is clearly better, the success guardrail is unchanged but its interval is still
    # wider than its 5-point margin at 300 per arm: the experiment keeps running
    r = evaluate_experiment(arm(n=300), arm(n=300, latency_ms=700.0), PERF)
    success = r.metrics["success"]
    assert r.metrics["latency"].significant_improvement and not success.significant_harm
    assert success.guardrail_status == "inconclusive" and success.ni_bound < -0.05 < success.ci_lower + 0.1
    assert r.decision == "continue" and r.recommendation == "continue"
    assert "waiting for evidence on a guardrail: success rate 0.0 pts [" in r.reason
    assert "not yet shown to stay within -5.0 pts (always-valid bound -" in r.reason
    more = int(r.reason.split("needs about ")[1].split()[0])
    assert more == success.required_per_arm - 300 and more > 0
    # ... and the same candidate is applied once the guardrail has shown it
    later = evaluate_experiment(arm(n=300 + more), arm(n=300 + more, latency_ms=700.0), PERF, previous=r)
    assert later.metrics["success"].guardrail_status == "ok" and later.decision == "apply"


def test_a_guardrail_worse_within_its_margin_is_an_accepted_trade_off():
    # more retries for more successes: retries significantly worse, but by less than 0.25/exec
    c = arm(n=4000, retries=0.25)
    t = arm(n=4000, success=0.95, retries=0.37)
    r = evaluate_experiment(c, t, Policy(feedback_type="reliability"))
    retries = r.metrics["retries"]
    assert retries.significant_harm and retries.guardrail_status == "ok"
    assert r.decision == "apply"
    assert "retries +0.12 retries/exec [" in r.reason and "worse, within its +0.25 retries/exec margin" in r.reason


def test_guardrail_with_too_little_data_blocks_applying():
    c = arm(n=1000, rating=None)
    t = arm(n=1000, latency_ms=800.0)
    c = ArmStats(c.executions, c.success, c.latency, c.quality, mean_stats(5, 0.9, 0.1), None)
    t = ArmStats(t.executions, t.success, t.latency, t.quality, mean_stats(5, 0.1, 0.1), None)
    r = evaluate_experiment(c, t, PERF)
    assert r.metrics["rating"].guardrail_status == "inconclusive" and "not evaluated" in r.metrics["rating"].note
    assert r.decision == "continue"
    assert "user rating has 5/5 observations, fewer than 30 per arm" in r.reason


def test_required_sample_covers_the_guardrails_with_the_power_split():
    # quality primary; success and latency guardrails: beta is split three ways
    from feedback_loop_dagster.lib.stats.noninferiority import noninferiority_sample_size
    from feedback_loop_dagster.lib.stats.power import sequential_sample_size

    pol = Policy(feedback_type="quality", minimum_detectable_effect=0.1)
    r = evaluate_experiment(arm(n=200), arm(n=200), pol)
    power = 1 - 0.2 / 3
    success_sd = math.sqrt(0.9 * 0.1)
    success_need = math.ceil(noninferiority_sample_size(round(0.05 / success_sd, 3), 0.05, power))
    quality_need = math.ceil(sequential_sample_size(round(0.07 / 0.15, 3), 0.05, power))
    assert r.metrics["success"].required_per_arm == success_need
    assert r.metrics["quality"].required_per_arm == quality_need
    assert r.required_sample_per_arm == max(m.required_per_arm for m in r.metrics.values()) == success_need
    assert r.additional_samples_needed == success_need - 200


def test_sample_ratio_mismatch_invalidates():
    r = evaluate_experiment(arm(n=1000), arm(n=1000, latency_ms=500.0, executions=700), PERF)
    assert r.srm_p_value < 0.001 and not r.srm_passed
    assert r.decision == "invalid" and "sample-ratio mismatch" in r.reason
    # the planned split is honoured
    ok = evaluate_experiment(arm(n=2800), arm(n=1200, latency_ms=500.0), Policy(feedback_type="performance",
                                                                                traffic_split=0.3))
    assert ok.srm_passed and ok.decision == "apply"


def test_minimum_sample_gate():
    no_guards = {"success": None, "quality": None}
    r = evaluate_experiment(arm(n=20, **no_guards), arm(n=20, latency_ms=300.0, **no_guards), PERF)
    assert r.decision == "continue" and "collecting data" in r.reason and "needs 30/30" in r.reason
    assert r.metrics["latency"].significant_improvement  # the evidence is there, the gate holds it
    assert evaluate_experiment(arm(n=30, **no_guards), arm(n=30, latency_ms=300.0, **no_guards), PERF).decision == "apply"


def test_auto_apply_threshold_above_one_minus_alpha():
    pol = Policy(feedback_type="performance", auto_apply_threshold=0.9999)
    r = evaluate_experiment(arm(n=400), arm(n=400, latency_ms=880.0), pol)
    assert r.metrics["latency"].significant_improvement
    assert r.confidence_score < 0.9999
    assert r.decision == "continue" and "auto_apply_threshold" in r.reason


def test_review_and_monitoring_never_auto_apply():
    c, t = arm(), arm(latency_ms=800.0)
    rev = evaluate_experiment(c, t, Policy(feedback_type="performance", require_review=True))
    assert (rev.decision, rev.recommendation, rev.needs_review) == ("continue", "apply", True)
    assert "awaiting human review" in rev.reason
    manual = evaluate_experiment(c, t, Policy(feedback_type="performance", auto_apply=False))
    assert manual.decision == "continue" and manual.needs_review
    mon = evaluate_experiment(c, t, Policy.preset("monitoring", auto_apply_threshold=0.9, feedback_type="performance"))
    assert mon.decision == "continue" and mon.recommendation == "apply" and "observe only" in mon.reason
    harm = evaluate_experiment(t, c, Policy.preset("monitoring", feedback_type="performance"))
    assert harm.decision == "continue" and harm.recommendation == "reject"


def test_all_uses_holm_across_three_primaries():
    c = arm(n=800)
    t = arm(n=800, success=0.91, latency_ms=920.0, quality=0.71)
    r = evaluate_experiment(c, t, Policy(feedback_type="all"))
    prim = [r.metrics[m] for m in ("success", "latency", "quality")]
    with mock.patch("gc.collect", lambda *a: 0):
        expected = multipletests([m.p_value for m in prim], method="holm")[1]
    for m, e in zip(prim, expected):
        assert m.role == "primary"
        assert m.adjusted_p_value == pytest.approx(e, rel=1e-12)
    assert r.p_value == r.metrics[r.lead_metric].adjusted_p_value
    assert "Holm" in r.reason


def test_all_applies_on_one_improvement_and_rejects_on_any_harm():
    pol = Policy(feedback_type="all")
    good = evaluate_experiment(arm(), arm(latency_ms=800.0), pol)
    assert good.decision == "apply" and good.lead_metric == "latency"
    mixed = evaluate_experiment(arm(), arm(latency_ms=800.0, quality=0.6), pol)
    assert mixed.decision == "reject" and "quality score" in mixed.reason


def test_all_without_quality_data_uses_the_other_primaries():
    r = evaluate_experiment(arm(quality=None), arm(quality=None, latency_ms=800.0), Policy())
    assert "quality" not in r.metrics and r.decision == "apply"


@settings(deadline=None, max_examples=200)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6))
def test_holm_matches_statsmodels(ps):
    # statsmodels runs gc.collect() on every Holm call (~0.2 s here); it does not affect the result
    with mock.patch("gc.collect", lambda *a: 0):
        expected = list(multipletests(ps, method="holm")[1])
    assert holm_adjust(ps) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_fixed_horizon_waits_for_the_planned_sample():
    pol = Policy(feedback_type="performance", test_method="fixed_horizon", minimum_detectable_effect=0.1)
    early = evaluate_experiment(arm(n=100), arm(n=100, latency_ms=700.0), pol)
    assert early.metrics["latency"].method == "welch_t"
    assert early.metrics["latency"].significant_improvement
    assert early.decision == "continue" and "fixed-horizon plan" in early.reason
    need = early.required_sample_per_arm
    assert need > 100 and early.additional_samples_needed == need - 100
    late = evaluate_experiment(arm(n=need), arm(n=need, latency_ms=900.0), pol)
    assert late.decision == "apply" and "CI" in late.reason


def test_required_sample_reported_for_sequential():
    r = evaluate_experiment(arm(n=50), arm(n=50), PERF)
    assert r.decision == "continue"
    assert r.required_sample_per_arm > 50
    assert r.additional_samples_needed == r.required_sample_per_arm - 50
    assert f"about {r.additional_samples_needed} more executions per arm" in r.reason
    prod = evaluate_experiment(arm(n=50), arm(n=50), Policy.preset("production", min_sample_size=100))
    assert prod.required_sample_per_arm >= 100


def test_degenerate_arms_give_defined_json():
    cases = [
        (ArmStats(), ArmStats()),
        (ArmStats(1, ProportionStats(1, 1)), ArmStats(1, ProportionStats(1, 0))),
        (ArmStats(60, ProportionStats(60, 60)), ArmStats(60, ProportionStats(60, 60))),
        (ArmStats(60, quality=MeanStats.from_values([0.5] * 60)), ArmStats(60, quality=MeanStats.from_values([0.5] * 60))),
    ]
    for pol in (Policy(), Policy(feedback_type="reliability"), Policy(test_method="fixed_horizon")):
        for c, t in cases:
            r = evaluate_experiment(c, t, pol)
            assert r.decision in DECISIONS
            assert 0.0 <= r.p_value <= 1.0
            json.dumps(r.to_dict(), allow_nan=False)
    r = evaluate_experiment(cases[2][0], cases[2][1], Policy(feedback_type="reliability"))
    assert r.decision == "continue" and r.p_value == 1.0 and r.metrics["success"].effect == 0.0


def test_previous_state_in_every_accepted_form_keeps_p_monotone():
    rng = np.random.default_rng(8)
    c_vals, t_vals = rng.normal(7.0, 0.5, 1200), rng.normal(6.97, 0.5, 1200)
    pol = PERF
    prev = None
    forms = []
    for n in range(100, 1201, 100):
        c = ArmStats(n, latency=LogMeanStats.from_values(c_vals[:n]))
        t = ArmStats(n, latency=LogMeanStats.from_values(t_vals[:n]))
        r = evaluate_experiment(c, t, pol, previous=prev)
        if prev is not None:
            assert r.metrics["latency"].p_value <= forms[-1]
        forms.append(r.metrics["latency"].p_value)
        prev = r.to_dict() if n % 200 else r
    # the other forms: state mapping and plain p-values
    r1 = evaluate_experiment(c, t, pol, previous={"latency": 0.001})
    assert r1.metrics["latency"].p_value == 0.001
    r2 = evaluate_experiment(c, t, pol, previous_p_values={"latency": 0.002})
    assert r2.metrics["latency"].p_value == 0.002
    r3 = evaluate_experiment(c, t, pol, previous={"latency": {"p_value": 0.5, "ci_lower": -0.01, "ci_upper": None}})
    assert r3.metrics["latency"].ci_lower >= -0.01
    # fixed horizon ignores the state
    r4 = evaluate_experiment(c, t, Policy(feedback_type="performance", test_method="fixed_horizon"),
                             previous={"latency": 0.0})
    assert r4.metrics["latency"].p_value > 0.0


def test_result_serialises_with_state_and_summaries():
    r = evaluate_experiment(arm(rating=0.8, retries=0.2), arm(latency_ms=850.0, rating=0.8, retries=0.2), Policy())
    d = r.to_dict()
    s = json.dumps(d, allow_nan=False)
    back = json.loads(s)
    assert back["decision"] == r.decision and back["confidence_score"] == r.confidence_score
    assert set(back["metrics"]) == {"success", "latency", "quality", "rating", "retries"}
    assert set(back["state"]["latency"]) == {"p_value", "ci_lower", "ci_upper"}
    assert set(back["state"]["success"]) == {"p_value", "ci_lower", "ci_upper"}  # a primary of "all"
    assert set(back["state"]["rating"]) == {"p_value", "ci_lower", "ci_upper", "ni_bound"}
    assert back["metrics"]["latency"]["summary"].startswith("latency -15.0% [")
    assert isinstance(r, ExperimentResult)


def test_evaluate_metric_accepts_plain_mean_stats_for_latency():
    c = mean_stats(500, math.log(1000), 0.5)
    t = mean_stats(500, math.log(900), 0.5)
    a = evaluate_metric("latency", c, t, PERF)
    b = evaluate_metric("latency", LogMeanStats(c.n, c.total, c.total_sq), LogMeanStats(t.n, t.total, t.total_sq), PERF)
    assert a.p_value == b.p_value and a.relative_effect == pytest.approx(-0.1)
    assert a.mean_control == pytest.approx(1000.0)


arm_sizes = st.integers(0, 400)


@settings(deadline=None, max_examples=150)
@given(arm_sizes, arm_sizes, st.floats(0.3, 1.0), st.floats(0.3, 1.0), st.floats(500, 2000), st.floats(500, 2000),
       st.sampled_from(["performance", "reliability", "quality", "all"]))
def test_random_arms_properties(n_c, n_t, p_c, p_t, l_c, l_t, ftype):
    c = arm(n=max(n_c, 0), success=p_c, latency_ms=l_c, quality=p_c * 0.8) if n_c else ArmStats()
    t = arm(n=max(n_t, 0), success=p_t, latency_ms=l_t, quality=p_t * 0.8) if n_t else ArmStats()
    pol = Policy(feedback_type=ftype)
    r = evaluate_experiment(c, t, pol)
    s = evaluate_experiment(t, c, pol)
    assert r.decision in DECISIONS and 0.0 <= r.p_value <= 1.0
    json.dumps(r.to_dict(), allow_nan=False)
    for m in r.metrics.values():
        assert 0.0 <= m.p_value <= 1.0 and not (m.significant_improvement and m.significant_harm)
    # swapping the arms flips the direction: an applied candidate is rejected the other way round
    if r.decision == "apply" and ftype != "all":
        assert s.decision == "reject"
    if r.decision == "invalid":
        assert s.decision == "invalid"


def test_metric_results_equal_the_public_tests():
    from feedback_loop_dagster.lib.stats.devtools.estimates import (
        msprt_mean_test,
        msprt_proportion_test,
        two_proportion_z_test,
        welch_t_test,
    )

    c, t = arm(n=400), arm(n=420, success=0.93, latency_ms=950.0, quality=0.72)
    seq = Policy()
    fixed = Policy(test_method="fixed_horizon")
    pairs = [
        ("success", seq, msprt_proportion_test(c.success, t.success)),
        ("latency", seq, msprt_mean_test(c.latency, t.latency)),
        ("quality", seq, msprt_mean_test(c.quality, t.quality)),
        ("success", fixed, two_proportion_z_test(c.success, t.success)),
        ("latency", fixed, welch_t_test(c.latency, t.latency)),
    ]
    for metric, pol, ref in pairs:
        r = evaluate_metric(metric, c.get(metric), t.get(metric), pol)
        assert r.p_value == pytest.approx(ref.p_value, rel=1e-12, abs=1e-300)
        assert (r.ci_lower, r.ci_upper) == pytest.approx((ref.ci_lower, ref.ci_upper), rel=1e-12)
        assert r.relative_effect == pytest.approx(ref.relative, rel=1e-12)
        assert (r.relative_ci_lower, r.relative_ci_upper) == pytest.approx(
            (ref.relative_ci_lower, ref.relative_ci_upper), rel=1e-12)
        assert r.method == ref.method


def test_numpy_scalars_from_frames_or_sql_serialise():
    c = ArmStats(np.int64(500), ProportionStats(np.int64(500), np.int64(450)),
                 LogMeanStats(np.int64(500), np.float64(3450.0), np.float64(23900.0)))
    t = ArmStats(np.int64(500), ProportionStats(np.int64(500), np.int64(460)),
                 LogMeanStats(np.int64(500), np.float64(3440.0), np.float64(23760.0)))
    r = evaluate_experiment(c, t, Policy())
    assert type(r.n_control) is int
    json.dumps(r.to_dict(), allow_nan=False)


# ---------------------------------------------------------------------------
# chaining `previous` between looks (issue 10, item 4)
# ---------------------------------------------------------------------------

def _look(n, successes, log_mean=None, log_sd=1.0):
    latency = None if log_mean is None else mean_stats(n, log_mean, log_sd, LogMeanStats)
    return ArmStats(n, ProportionStats(n, successes), latency)


def test_a_zero_variance_first_look_does_not_pin_later_intervals():
    first = evaluate_experiment(_look(5, 5), _look(5, 5), PERF)
    c, t = _look(300, 270, 6.0), _look(300, 255, 5.7)
    chained = evaluate_experiment(c, t, PERF, previous=first.to_dict())
    alone = evaluate_experiment(c, t, PERF)
    success = chained.metrics["success"]
    assert (success.ci_lower, success.ci_upper) == (alone.metrics["success"].ci_lower, alone.metrics["success"].ci_upper)
    assert success.ci_lower == pytest.approx(-0.132, abs=0.001) and success.ci_upper == pytest.approx(0.032, abs=0.001)
    # a 5-point drop with an interval reaching -13 points is no evidence of non-inferiority
    assert success.guardrail_status == "inconclusive" and chained.decision == "continue"
    # the constant look itself: an honest wide interval, p = 1, nothing carried
    assert first.metrics["success"].ci_lower < -0.3 and first.metrics["success"].p_value == 1.0
    assert first.state["success"] == {}


def test_a_degenerate_first_look_does_not_carry_p_zero_into_holm():
    first = evaluate_experiment(_look(2, 2), _look(2, 0), Policy())
    assert first.metrics["success"].p_value > 0.5  # 2/2 vs 0/2 is no proof of anything
    c, t = _look(100, 90, 6.0), _look(100, 90, 5.5)
    chained = evaluate_experiment(c, t, Policy(), previous=first)
    alone = evaluate_experiment(c, t, Policy())
    assert chained.decision == alone.decision == "continue"
    assert chained.metrics["success"].adjusted_p_value == alone.metrics["success"].adjusted_p_value
    assert chained.metrics["latency"].adjusted_p_value == alone.metrics["latency"].adjusted_p_value > 0.05


# ---------------------------------------------------------------------------
# experiments end (issue 10, item 3)
# ---------------------------------------------------------------------------

def test_an_experiment_out_of_time_or_sample_ends_inconclusive():
    c, t = arm(n=500), arm(n=500, latency_ms=995.0)
    running = evaluate_experiment(c, t, PERF, days_run=13)
    assert running.decision == "continue"
    ended = evaluate_experiment(c, t, PERF, days_run=14)
    assert ended.decision == ended.recommendation == "inconclusive" and ended.days_run == 14
    assert ended.reason.startswith("inconclusive: no decision after 14 days (max_experiment_days 14); control kept")
    assert "no significant difference yet: latency -0.5% [" in ended.reason
    capped = evaluate_experiment(c, t, Policy(feedback_type="performance", max_sample_per_arm=500))
    assert capped.decision == "inconclusive" and "500/500 executions (max_sample_per_arm 500)" in capped.reason
    assert evaluate_experiment(c, t, Policy(feedback_type="performance", max_experiment_days=None),
                               days_run=400).decision == "continue"


def test_a_decision_on_the_last_day_stands_and_monitoring_only_observes():
    assert evaluate_experiment(arm(), arm(latency_ms=850.0), PERF, days_run=30).decision == "apply"
    assert evaluate_experiment(arm(), arm(latency_ms=1150.0), PERF, days_run=30).decision == "reject"
    mon = evaluate_experiment(arm(n=500), arm(n=500), Policy.preset("monitoring", max_experiment_days=3), days_run=5)
    assert mon.decision == "continue" and mon.recommendation == "inconclusive" and "observe only" in mon.reason


def test_latency_logs_hundreds_apart_or_an_empty_arm_never_raise():
    """Accepted rows may hold a sub-picosecond duration beside a slow one (log-means -744 vs 7):
    the engine reports an unbounded relative change instead of overflowing."""
    tiny = mean_stats(40, -744.0, 1.0, cls=LogMeanStats)
    slow = mean_stats(40, 7.0, 1.0, cls=LogMeanStats)
    for control, treatment in ((tiny, slow), (slow, tiny), (LogMeanStats(0, 0.0, 0.0), slow)):
        result = evaluate_metric("latency", control, treatment)
        assert result.relative_effect is None or result.relative_effect >= -1.0
        format_effect(result)  # the wording does not overflow either


@pytest.mark.parametrize("control, treatment", [
    (arm(), arm(latency_ms=900.0, rating=0.8, retries=0.2)),
    (arm(n=1, executions=1), arm(n=1, executions=1)),  # unbounded intervals, infinite standard errors
])
def test_a_stored_result_reads_back_as_the_result(control, treatment):
    """`ExperimentResult.from_dict` gives the apply stage the typed look that `to_dict` stored."""
    result = evaluate_experiment(control, treatment, PERF)
    stored = json.loads(json.dumps(result.to_dict()))
    back = ExperimentResult.from_dict(stored)
    assert back.to_dict() == result.to_dict()
    assert back.recommendation == result.recommendation and back.primary_metrics == result.primary_metrics
    for name, metric in result.metrics.items():
        assert (back.metrics[name].ci_lower, back.metrics[name].ci_upper, back.metrics[name].se) == (
            metric.ci_lower, metric.ci_upper, metric.se)
