"""The always-valid mSPRT: closed forms, monotonicity, consistency, degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy import stats as sps

from feedback_loop_dagster.lib.stats import (
    LogMeanStats,
    MeanStats,
    ProportionStats,
    msprt_log_likelihood_ratio,
    msprt_update,
)
from feedback_loop_dagster.lib.stats.devtools.estimates import msprt_mean_test, msprt_proportion_test
from feedback_loop_dagster.lib.stats.sequential import msprt_multiplier, msprt_update_arrays


@pytest.mark.parametrize("delta,V,tau2", [(0.05, 0.001, 0.004), (-0.3, 0.02, 0.01), (0.0, 0.5, 2.0),
                                          (1.2, 0.3, 0.05)])
def test_closed_form_equals_numerical_normal_mixture(delta, V, tau2):
    # Lambda = integral of N(delta; theta, V) / N(delta; 0, V) dN(theta; 0, tau2)  (Johari et al. 2017, sec. 4)
    sd = math.sqrt(V)
    f0 = sps.norm.pdf(delta, 0.0, sd)
    integrand = lambda th: sps.norm.pdf(delta, th, sd) / f0 * sps.norm.pdf(th, 0.0, math.sqrt(tau2))
    lam, _ = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-13, epsrel=1e-11)
    assert math.exp(msprt_log_likelihood_ratio(delta, V, tau2)) == pytest.approx(lam, rel=1e-8)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_interval_bounds_are_where_lambda_equals_one_over_alpha(alpha):
    delta, V, tau2 = 0.12, 0.004, 0.01
    p, lo, hi, mult, _ = msprt_update(delta, V, tau2, alpha)
    for bound in (lo, hi):
        # testing theta0 = bound: the statistic is delta - bound
        assert msprt_log_likelihood_ratio(delta - bound, V, tau2) == pytest.approx(-math.log(alpha), rel=1e-10)
    assert mult == pytest.approx(msprt_multiplier(V, tau2, alpha))


def test_half_width_equals_waudby_smith_normal_mixture_boundary():
    # sigma * sqrt(2 (t rho^2 + 1) / (t^2 rho^2) * log(sqrt(t rho^2 + 1) / alpha)) with V = sigma^2/t, tau = rho sigma
    sigma, t, rho, alpha = 1.7, 350, 0.2, 0.05
    V, tau2 = sigma**2 / t, (rho * sigma) ** 2
    _, lo, hi, _, _ = msprt_update(0.0, V, tau2, alpha)
    ws = sigma * math.sqrt(2 * (t * rho**2 + 1) / (t**2 * rho**2) * math.log(math.sqrt(t * rho**2 + 1) / alpha))
    assert hi == pytest.approx(ws, rel=1e-12)
    assert lo == pytest.approx(-ws, rel=1e-12)


@settings(deadline=None, max_examples=200)
@given(st.floats(-5, 5), st.floats(1e-6, 10), st.floats(1e-6, 10), st.sampled_from([0.01, 0.05, 0.1, 0.5]))
def test_p_and_interval_are_consistent(delta, V, tau2, alpha):
    p, lo, hi, _, _ = msprt_update(delta, V, tau2, alpha)
    assert 0.0 <= p <= 1.0
    assert lo <= delta <= hi
    excludes_zero = lo > 0 or hi < 0
    # p <= alpha exactly when the sequence excludes 0 (up to rounding at the boundary)
    if abs(p - alpha) > 1e-9 * alpha:
        assert (p <= alpha) == excludes_zero


def _looks(rng, n_max=600, step=20, effect=0.0):
    c = rng.normal(0.0, 1.0, n_max)
    t = rng.normal(effect, 1.0, n_max)
    for n in range(step, n_max + 1, step):
        yield MeanStats.from_values(c[:n]), MeanStats.from_values(t[:n])


@pytest.mark.parametrize("seed", range(5))
def test_p_is_monotone_and_sequences_nested_across_looks(seed):
    rng = np.random.default_rng(seed)
    prev_p, prev_ci = None, None
    for c, t in _looks(rng, effect=0.1):
        r = msprt_mean_test(c, t, 0.05, previous_p=prev_p, previous_ci=prev_ci)
        if prev_p is not None:
            assert r.p_value <= prev_p
            assert prev_ci[0] <= r.ci_lower and r.ci_upper <= prev_ci[1]
        prev_p, prev_ci = r.p_value, (r.ci_lower, r.ci_upper)


def test_without_previous_state_p_can_rise_which_is_why_the_state_is_kept():
    rng = np.random.default_rng(3)
    ps = [msprt_mean_test(c, t).p_value for c, t in _looks(rng, effect=0.15)]
    assert any(b > a for a, b in zip(ps, ps[1:]))


@settings(deadline=None, max_examples=100)
@given(st.lists(st.floats(-20, 20), min_size=0, max_size=30), st.lists(st.floats(-20, 20), min_size=0, max_size=30))
def test_mean_test_properties_and_swap(a, b):
    c, t = MeanStats.from_values(a), MeanStats.from_values(b)
    r = msprt_mean_test(c, t)
    s = msprt_mean_test(t, c)
    for x in (r, s):
        assert 0.0 <= x.p_value <= 1.0
        assert not any(math.isnan(v) for v in (x.effect, x.se, x.statistic, x.ci_lower, x.ci_upper))
    assert s.effect == pytest.approx(-r.effect, abs=1e-12)
    assert s.p_value == pytest.approx(r.p_value, rel=1e-9, abs=1e-12)
    assert s.ci_lower == pytest.approx(-r.ci_upper, rel=1e-9, abs=1e-12)


def test_degenerate_inputs_have_defined_results():
    one = msprt_mean_test(MeanStats.from_values([1.0]), MeanStats.from_values([1.0, 2.0]))
    assert one.p_value == 1.0 and one.ci_lower == -math.inf and one.ci_upper == math.inf and one.note
    same = msprt_mean_test(MeanStats.from_values([0.5] * 10), MeanStats.from_values([0.5] * 12))
    assert (same.p_value, same.effect, same.ci_lower, same.ci_upper) == (1.0, 0.0, 0.0, 0.0)
    diff = msprt_mean_test(MeanStats.from_values([0.5] * 10), MeanStats.from_values([0.6] * 12))
    assert diff.p_value == 0.0 and diff.ci_lower == pytest.approx(0.1)
    allsucc = msprt_proportion_test(ProportionStats(40, 40), ProportionStats(50, 50))
    assert allsucc.p_value == 1.0 and allsucc.effect == 0.0
    onesucc = msprt_proportion_test(ProportionStats(40, 40), ProportionStats(50, 45))
    assert 0.0 < onesucc.p_value <= 1.0 and onesucc.ci_lower < onesucc.effect < onesucc.ci_upper
    # an unbounded interval intersected with a previous one keeps the previous one
    kept = msprt_mean_test(MeanStats(), MeanStats(), previous_p=0.2, previous_ci=(-1.0, 2.0))
    assert (kept.p_value, kept.ci_lower, kept.ci_upper) == (0.2, -1.0, 2.0)


def test_tau_is_exposed_and_changes_where_the_sequence_is_tight():
    rng = np.random.default_rng(5)
    c = MeanStats.from_values(rng.normal(0, 1, 400))
    t = MeanStats.from_values(rng.normal(0.25, 1, 400))
    widths = {}
    for tau in (0.01, 0.2, 5.0):
        r = msprt_mean_test(c, t, tau=tau)
        widths[tau] = r.ci_upper - r.ci_lower
    # at n = 400 per arm, tau = 0.2 sd is near the optimum; a tiny or huge mixture is wider
    assert widths[0.2] < widths[0.01] and widths[0.2] < widths[5.0]
    default = msprt_mean_test(c, t)
    explicit = msprt_mean_test(c, t, tau=0.2 * math.sqrt((c.variance + t.variance) / 2))
    assert default.p_value == pytest.approx(explicit.p_value, rel=1e-12)


def test_sequence_is_wider_than_the_fixed_horizon_interval():
    rng = np.random.default_rng(9)
    c = MeanStats.from_values(rng.normal(0, 1, 500))
    t = MeanStats.from_values(rng.normal(0, 1, 500))
    r = msprt_mean_test(c, t)
    assert (r.ci_upper - r.ci_lower) / 2 > 1.96 * r.se


def test_latency_relative_interval_is_exact_transform():
    rng = np.random.default_rng(2)
    c = LogMeanStats.from_durations(rng.lognormal(7, 0.5, 300))
    t = LogMeanStats.from_durations(rng.lognormal(6.9, 0.5, 300))
    r = msprt_mean_test(c, t)
    assert r.relative == pytest.approx(math.exp(r.effect) - 1, rel=1e-12)
    assert r.relative_ci_lower == pytest.approx(math.exp(r.ci_lower) - 1, rel=1e-12)


def test_array_version_equals_scalar():
    rng = np.random.default_rng(4)
    k = 300
    delta = rng.normal(0, 0.2, k)
    V = rng.uniform(0.0005, 0.05, k)
    V[:10] = np.inf
    V[10:20] = 0.0
    delta[15:20] = 0.0
    tau2 = rng.uniform(0.0, 0.02, k)
    tau2[20:25] = 0.0  # a mixture on 0 alone: no evidence
    V[25:28] = 1e-320  # tau^2 / V overflows: treated as no variance
    prev_p = rng.uniform(0, 1, k)
    prev_lo = delta - rng.uniform(0, 0.5, k)
    prev_hi = delta + rng.uniform(0, 0.5, k)
    prev_lo[:5] = 5.0  # disjoint from the current interval: the current one is kept
    prev_hi[:5] = 6.0
    p, lo, hi = msprt_update_arrays(delta, V, tau2, 0.05, prev_p, prev_lo, prev_hi)
    for i in range(k):
        sp, slo, shi, _, _ = msprt_update(float(delta[i]), float(V[i]), float(tau2[i]), 0.05, float(prev_p[i]),
                                          (float(prev_lo[i]), float(prev_hi[i])))
        assert p[i] == pytest.approx(sp, rel=1e-12, abs=1e-300)
        assert lo[i] == pytest.approx(slo, rel=1e-12) and hi[i] == pytest.approx(shi, rel=1e-12)
