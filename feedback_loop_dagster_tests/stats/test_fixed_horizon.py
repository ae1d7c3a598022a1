"""Fixed-horizon tests agree with scipy.stats and statsmodels to 1e-9."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint, proportions_ztest

from feedback_loop_dagster.lib.stats import LogMeanStats, MeanStats, ProportionStats
from feedback_loop_dagster.lib.stats.devtools.estimates import student_t_test, two_proportion_z_test, welch_t_test
from feedback_loop_dagster.lib.stats.fixed_horizon import normal_sf, wilson_interval

TOL = 1e-9
RNG = np.random.default_rng(20240601)
SAMPLES = [
    (RNG.normal(0.70, 0.15, 40), RNG.normal(0.74, 0.20, 55)),
    (RNG.normal(10.0, 3.0, 7), RNG.normal(9.0, 1.0, 12)),
    (RNG.exponential(2.0, 300), RNG.exponential(2.3, 280)),
    (np.array([1.0, 2.0, 3.0, 5.0]), np.array([2.0, 2.5, 2.0, 7.0, 8.0])),
]


@pytest.mark.parametrize("control,treatment", SAMPLES)
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_welch_matches_scipy(control, treatment, alternative):
    ours = welch_t_test(MeanStats.from_values(control), MeanStats.from_values(treatment), 0.05, alternative)
    ref = sps.ttest_ind(treatment, control, equal_var=False, alternative=alternative)
    assert ours.statistic == pytest.approx(ref.statistic, abs=TOL, rel=TOL)
    assert ours.p_value == pytest.approx(ref.pvalue, abs=TOL)
    assert ours.df == pytest.approx(ref.df, rel=TOL)
    ci = ref.confidence_interval(0.95)
    for a, b in ((ours.ci_lower, ci.low), (ours.ci_upper, ci.high)):
        if math.isinf(b):
            assert a == b
        else:
            assert a == pytest.approx(b, abs=TOL, rel=TOL)
    assert ours.effect == pytest.approx(treatment.mean() - control.mean(), abs=TOL)


@pytest.mark.parametrize("control,treatment", SAMPLES)
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_student_matches_scipy(control, treatment, alternative):
    ours = student_t_test(MeanStats.from_values(control), MeanStats.from_values(treatment), 0.1, alternative)
    ref = sps.ttest_ind(treatment, control, equal_var=True, alternative=alternative)
    assert ours.statistic == pytest.approx(ref.statistic, abs=TOL, rel=TOL)
    assert ours.p_value == pytest.approx(ref.pvalue, abs=TOL)
    ci = ref.confidence_interval(0.9)
    if not math.isinf(ci.low):
        assert ours.ci_lower == pytest.approx(ci.low, abs=TOL, rel=TOL)
    if not math.isinf(ci.high):
        assert ours.ci_upper == pytest.approx(ci.high, abs=TOL, rel=TOL)


COUNTS = [(83, 5, 99, 12), (1000, 900, 1000, 925), (50, 49, 60, 51), (400, 12, 380, 3), (30, 30, 30, 27)]


@pytest.mark.parametrize("n_c,x_c,n_t,x_t", COUNTS)
@pytest.mark.parametrize("alternative,sm_alt", [("two-sided", "two-sided"), ("greater", "larger"),
                                                ("less", "smaller")])
def test_two_proportion_z_matches_statsmodels(n_c, x_c, n_t, x_t, alternative, sm_alt):
    ours = two_proportion_z_test(ProportionStats(n_c, x_c), ProportionStats(n_t, x_t), 0.05, alternative)
    z, p = proportions_ztest([x_t, x_c], [n_t, n_c], alternative=sm_alt)
    assert ours.statistic == pytest.approx(float(z), abs=TOL, rel=TOL)
    assert ours.p_value == pytest.approx(float(p), abs=TOL)
    if alternative == "two-sided":
        lo, hi = confint_proportions_2indep(x_t, n_t, x_c, n_c, method="wald", compare="diff", alpha=0.05)
        assert ours.ci_lower == pytest.approx(lo, abs=TOL)
        assert ours.ci_upper == pytest.approx(hi, abs=TOL)


def test_statsmodels_alias_names_are_accepted_and_unknown_rejected():
    c, t = ProportionStats(100, 50), ProportionStats(100, 60)
    assert two_proportion_z_test(c, t, alternative="larger").p_value == two_proportion_z_test(
        c, t, alternative="greater").p_value
    with pytest.raises(ValueError, match="alternative"):
        two_proportion_z_test(c, t, alternative="bigger")



# --- one proportion's interval and the normal tail (the analyzers' evidence) ---

@pytest.mark.parametrize("total", [1, 2, 7, 30, 147, 1000, 10**7])
@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05, 0.2])
def test_wilson_interval_matches_statsmodels(total, alpha):
    for count in sorted({0, 1, total // 3, total // 2, total - 1, total}):
        ours = wilson_interval(count, total, alpha)
        low, high = proportion_confint(count, total, alpha=alpha, method="wilson")
        assert ours == pytest.approx((low, high), abs=1e-12), (count, total)
        assert 0.0 <= ours[0] <= count / total <= ours[1] <= 1.0
        # never a single point, not even with 0 or `total` successes (where the Wald interval is one)
        assert ours[1] - ours[0] > 0.0


@pytest.mark.parametrize("z", [-math.inf, -40.0, -8.0, -1.96, -0.3, 0.0, 1e-9, 0.5, 1.6448536269514722, 3.0, 8.5,
                               20.0, 37.5, math.inf])
def test_normal_sf_matches_scipy_in_both_tails(z):
    assert normal_sf(z) == pytest.approx(float(sps.norm.sf(z)), rel=1e-12, abs=0.0)

# --- relative effect -------------------------------------------------------

def test_relative_ci_is_the_delta_method():
    c = MeanStats.from_values(SAMPLES[0][0])
    t = MeanStats.from_values(SAMPLES[0][1])
    r = welch_t_test(c, t, 0.05)
    mc, mt = c.mean, t.mean
    se_rel = math.sqrt(t.variance / (t.n * mc**2) + mt**2 * c.variance / (c.n * mc**4))
    q = sps.t.ppf(0.975, r.df)
    assert r.relative == pytest.approx(mt / mc - 1, rel=1e-12)
    assert r.relative_ci_lower == pytest.approx(mt / mc - 1 - q * se_rel, rel=1e-9)
    assert r.relative_ci_upper == pytest.approx(mt / mc - 1 + q * se_rel, rel=1e-9)


def test_relative_ci_delta_method_covers_in_simulation():
    # 400 seeded experiments: a 95% relative CI by the delta method covers the true ratio ~95%.
    rng = np.random.default_rng(11)
    true_rel = 0.8 / 0.7 - 1
    hits = 0
    for _ in range(400):
        c = MeanStats.from_values(rng.normal(0.7, 0.2, 200))
        t = MeanStats.from_values(rng.normal(0.8, 0.2, 200))
        r = welch_t_test(c, t)
        hits += r.relative_ci_lower <= true_rel <= r.relative_ci_upper
    assert 0.91 <= hits / 400 <= 0.99


def test_latency_relative_is_ratio_of_geometric_means():
    c = LogMeanStats.from_durations([100.0, 200.0, 400.0, 300.0])
    t = LogMeanStats.from_durations([90.0, 150.0, 380.0, 260.0])
    r = welch_t_test(c, t)
    ratio = t.geometric_mean / c.geometric_mean
    assert r.relative == pytest.approx(ratio - 1, rel=1e-12)
    assert r.relative_ci_lower == pytest.approx(math.exp(r.ci_lower) - 1, rel=1e-12)
    assert r.relative_ci_upper == pytest.approx(math.exp(r.ci_upper) - 1, rel=1e-12)


# --- degenerate inputs: defined results, never NaN -------------------------

def _no_nan(r) -> None:
    for name in ("effect", "se", "statistic", "p_value", "ci_lower", "ci_upper"):
        assert not math.isnan(getattr(r, name)), name
    assert 0.0 <= r.p_value <= 1.0


def test_zero_variance_equal_means():
    c, t = MeanStats.from_values([0.7] * 20), MeanStats.from_values([0.7] * 25)
    r = welch_t_test(c, t)
    _no_nan(r)
    assert (r.p_value, r.effect, r.ci_lower, r.ci_upper) == (1.0, 0.0, 0.0, 0.0)


def test_zero_variance_different_means():
    c, t = MeanStats.from_values([0.7] * 20), MeanStats.from_values([0.8] * 20)
    r = welch_t_test(c, t)
    _no_nan(r)
    assert r.p_value == 0.0 and r.ci_lower == r.ci_upper == pytest.approx(0.1)
    assert welch_t_test(c, t, alternative="less").p_value == 1.0
    assert welch_t_test(c, t, alternative="greater").p_value == 0.0


@pytest.mark.filterwarnings("ignore:Precision loss occurred")
def test_one_arm_zero_variance_uses_the_other():
    c = MeanStats.from_values([1.0] * 10)
    t_vals = np.array([1.0, 2.0, 3.0, 1.5, 2.5])
    r = welch_t_test(c, MeanStats.from_values(t_vals))
    ref = sps.ttest_ind(t_vals, np.ones(10), equal_var=False)
    assert r.p_value == pytest.approx(ref.pvalue, abs=TOL)
    assert r.df == pytest.approx(4.0)


@pytest.mark.parametrize("test", [welch_t_test, student_t_test])
def test_fewer_than_two_observations(test):
    r = test(MeanStats.from_values([1.0]), MeanStats.from_values([1.0, 2.0, 3.0]))
    _no_nan(r)
    assert r.p_value == 1.0 and math.isinf(r.se) and r.ci_lower == -math.inf and r.ci_upper == math.inf
    assert r.note
    r0 = test(MeanStats(), MeanStats())
    _no_nan(r0)
    assert r0.relative is None


def test_proportion_all_successes_in_both_arms():
    r = two_proportion_z_test(ProportionStats(50, 50), ProportionStats(40, 40))
    _no_nan(r)
    assert (r.p_value, r.effect, r.ci_lower, r.ci_upper) == (1.0, 0.0, 0.0, 0.0)
    assert r.relative == 0.0


def test_proportion_one_arm_all_successes():
    r = two_proportion_z_test(ProportionStats(50, 50), ProportionStats(50, 40))
    _no_nan(r)
    z, p = proportions_ztest([40, 50], [50, 50])
    assert r.p_value == pytest.approx(float(p), abs=TOL)
    assert r.effect == pytest.approx(-0.2)


def test_proportion_with_no_success_in_control_has_no_relative_effect():
    r = two_proportion_z_test(ProportionStats(50, 0), ProportionStats(50, 5))
    _no_nan(r)
    assert r.relative is None and r.relative_ci_lower is None


@settings(deadline=None, max_examples=120)
@given(
    st.lists(st.floats(-50, 50, allow_nan=False), min_size=0, max_size=25),
    st.lists(st.floats(-50, 50, allow_nan=False), min_size=0, max_size=25),
    st.sampled_from(["two-sided", "greater", "less"]),
)
def test_welch_properties(a, b, alternative):
    c, t = MeanStats.from_values(a), MeanStats.from_values(b)
    r = welch_t_test(c, t, 0.05, alternative)
    _no_nan(r)
    assert r.ci_lower <= r.ci_upper
    # swapping the arms flips the effect and mirrors the one-sided alternative
    mirror = {"two-sided": "two-sided", "greater": "less", "less": "greater"}[alternative]
    s = welch_t_test(t, c, 0.05, mirror)
    assert s.effect == pytest.approx(-r.effect, abs=1e-12)
    assert s.p_value == pytest.approx(r.p_value, abs=1e-12)


@settings(deadline=None, max_examples=120)
@given(st.integers(0, 200), st.integers(0, 200), st.data())
def test_z_properties(n_c, n_t, data):
    x_c = data.draw(st.integers(0, n_c))
    x_t = data.draw(st.integers(0, n_t))
    r = two_proportion_z_test(ProportionStats(n_c, x_c), ProportionStats(n_t, x_t))
    _no_nan(r)
    s = two_proportion_z_test(ProportionStats(n_t, x_t), ProportionStats(n_c, x_c))
    assert s.effect == pytest.approx(-r.effect, abs=1e-12)
    assert s.p_value == pytest.approx(r.p_value, abs=1e-12)


def test_welch_degrees_of_freedom_survive_tiny_variances():
    """Squares of variances near 1e-170 underflow to 0; the scaled formula must not divide by it."""
    import math

    from feedback_loop_dagster.lib.stats.fixed_horizon import welch_core

    tiny = welch_core(5, 1.0, 1e-170, 7, 2.0, 2e-170)
    scaled = welch_core(5, 1.0, 1.0, 7, 2.0, 2.0)
    assert math.isfinite(tiny.df) and tiny.df == pytest.approx(scaled.df, rel=1e-12)
