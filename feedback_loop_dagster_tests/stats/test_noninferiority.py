"""The always-valid non-inferiority test: its boundary, its level under continuous peeking, its plan."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps
from statsmodels.stats.power import NormalIndPower

from feedback_loop_dagster.lib.stats.noninferiority import (
    mixture_tau2,
    noninferiority_bound,
    noninferiority_sample_size,
    one_sided_log_likelihood_ratio,
    one_sided_multiplier,
    one_sided_multiplier_arrays,
)
from feedback_loop_dagster.lib.stats.sequential import msprt_multiplier


@pytest.mark.parametrize("r", [0.05, 0.3, 7.0, 20.0, 500.0])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_boundary_is_where_the_mixture_reaches_one_over_alpha(r, alpha):
    b = one_sided_multiplier(1.0, r, alpha)
    # the mixture by quadrature: V = 1, N(tau, tau^2) cut at 0 with tau^2 = r, the estimate b
    # standard errors above the null
    tau = math.sqrt(r)
    density = lambda th: sps.norm.pdf(th, tau, tau) / sps.norm.cdf(1.0)  # noqa: E731
    lam, _ = integrate.quad(lambda th: math.exp(th * b - th * th / 2) * density(th), 0, np.inf,
                            epsabs=1e-13, epsrel=1e-11, limit=200)
    assert lam == pytest.approx(1 / alpha, rel=1e-8)
    assert math.exp(one_sided_log_likelihood_ratio(b, r)) == pytest.approx(1 / alpha, rel=1e-10)
    assert one_sided_multiplier_arrays(np.array([2.0]), np.array([2.0 * r]), alpha)[0] == pytest.approx(b, rel=1e-12)
    if 0.3 <= r <= 7.0:  # where the margin is 1 to 5 standard errors: tighter than the two-sided test
        assert b < msprt_multiplier(1.0, r, alpha)


def test_mixture_scale_is_half_the_margin():
    assert mixture_tau2(0.05, 0.09, 0.2) == pytest.approx(0.025**2)
    assert mixture_tau2(0.0, 0.09, 0.2) == pytest.approx(0.2**2 * 0.09)


def test_bound_is_carried_as_a_running_maximum():
    low = noninferiority_bound(-0.01, 1e-4, 0.0025, 0.05)
    assert low == pytest.approx(-0.01 - one_sided_multiplier(1e-4, 0.0025, 0.05) * 0.01)
    assert noninferiority_bound(-0.05, 1e-4, 0.0025, 0.05, previous=low) == low
    assert noninferiority_bound(0.0, math.inf, 0.0025, 0.05) == -math.inf


def _crossed(rng, k, n_max, truth, sd, margin, alpha, step=1, bernoulli_base=None):
    """Share of k experiments whose running-max bound rises above -margin at some look."""
    looks = np.arange(30, n_max + 1, step)
    if bernoulli_base is None:
        c = rng.normal(0.0, sd, (k, n_max))
        t = rng.normal(truth, sd, (k, n_max))
    else:
        c = (rng.random((k, n_max)) < bernoulli_base).astype(float)
        t = (rng.random((k, n_max)) < bernoulli_base + truth).astype(float)
    idx = looks - 1
    n = looks.astype(float)
    mc, mt = np.cumsum(c, 1)[:, idx] / n, np.cumsum(t, 1)[:, idx] / n
    vc = (np.cumsum(c * c, 1)[:, idx] - n * mc * mc) / (n - 1)
    vt = (np.cumsum(t * t, 1)[:, idx] - n * mt * mt) / (n - 1)
    variance = np.maximum((vc + vt) / n, 1e-12)
    tau2 = np.full_like(variance, mixture_tau2(margin, 0.0, 0.0))
    bound = (mt - mc) - one_sided_multiplier_arrays(variance, tau2, alpha) * np.sqrt(variance)
    return (np.maximum.accumulate(bound, axis=1) > -margin).any(axis=1).mean()


@pytest.mark.parametrize("kind", ["normal", "bernoulli"])
def test_level_at_the_margin_holds_under_a_look_after_every_execution(kind):
    # truth exactly at the margin (the hardest null), a look after every execution pair
    k, alpha = 400, 0.05
    rng = np.random.default_rng(11 if kind == "normal" else 12)
    if kind == "normal":
        share = _crossed(rng, k, 800, -0.05, 0.15, 0.05, alpha)
    else:
        share = _crossed(rng, k, 800, -0.05, None, 0.05, alpha, bernoulli_base=0.9)
    assert share <= alpha + 2 * math.sqrt(alpha * (1 - alpha) / k)
    # worse than the margin: rarer still
    assert _crossed(np.random.default_rng(13), k, 800, -0.08, 0.15, 0.05, alpha, step=10) <= share + 0.01


def test_fixed_horizon_plan_equals_statsmodels():
    for e, alpha, power in [(0.1, 0.05, 0.8), (0.3, 0.01, 0.96)]:
        expected = NormalIndPower().solve_power(effect_size=e, alpha=alpha, power=power, alternative="larger")
        assert noninferiority_sample_size(e, alpha, power, sequential=False) == pytest.approx(expected, rel=1e-6)
    # a true improvement halfway to the margin needs four times as much
    assert noninferiority_sample_size(0.2, 0.05, 0.8, sequential=False, distance_sd=0.1) == pytest.approx(
        4 * noninferiority_sample_size(0.2, 0.05, 0.8, sequential=False))


def test_sequential_plan_gives_at_least_its_power():
    # success at 90% with a 5-point margin: an unchanged metric, looks every 10 up to the plan
    margin_sd = 0.05 / 0.3
    n_plan = math.ceil(noninferiority_sample_size(margin_sd, 0.05, 0.8))
    assert 900 < n_plan < 1000
    k = 400
    share = _crossed(np.random.default_rng(14), k, n_plan, 0.0, 1.0, margin_sd, 0.05, step=10)
    assert share >= 0.8 - 2 * math.sqrt(0.16 / k)
    # a plan for an improvement farther from the margin is smaller
    assert noninferiority_sample_size(margin_sd, 0.05, 0.8, distance_sd=2 * margin_sd) < n_plan / 3
    with pytest.raises(ValueError):
        noninferiority_sample_size(0.0)
