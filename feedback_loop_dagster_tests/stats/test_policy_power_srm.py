"""Policies and presets, power / sample size, sample-ratio mismatch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats as sps
from statsmodels.stats.power import NormalIndPower

from feedback_loop_dagster.lib.stats import (
    PRESETS,
    Policy,
    fixed_horizon_sample_size,
    get_preset,
    sequential_sample_size,
    srm_chi_square,
    srm_p_value,
)
from feedback_loop_dagster.lib.stats.devtools.vectorized import srm_p_value_arrays

# --- policies ----------------------------------------------------------------


def test_presets_match_design():
    p = PRESETS["production"]
    assert (p.auto_apply_threshold, p.min_sample_size, p.significance_level) == (0.99, 100, 0.01)
    d = PRESETS["development"]
    assert (d.auto_apply_threshold, d.min_sample_size, d.significance_level) == (0.85, 20, 0.10)
    q = PRESETS["quality"]
    assert (q.feedback_type, q.auto_apply_threshold, q.min_sample_size) == ("quality", 0.90, 50)
    m = PRESETS["monitoring"]
    assert m.enable_ab_testing is False and m.auto_apply is False
    for name, pol in PRESETS.items():
        assert pol.name == name
        assert pol.test_method == "sequential"
        assert Policy.preset(name) == pol


def test_preset_overrides_are_validated():
    p = Policy.preset("production", min_sample_size=500)
    assert p.min_sample_size == 500 and p.significance_level == 0.01
    with pytest.raises(ValidationError, match="significance_level"):
        Policy.preset("production", significance_level=0.9)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="production, development, quality, monitoring"):
        get_preset("prod")


@pytest.mark.parametrize("field,value", [
    ("significance_level", 0.0),
    ("significance_level", 0.51),
    ("auto_apply_threshold", 1.2),
    ("auto_apply_threshold", -0.1),
    ("min_sample_size", 0),
    ("time_window_days", 0),
    ("traffic_split", 1.0),
    ("minimum_detectable_effect", 0.0),
    ("feedback_type", "speed"),
    ("test_method", "bayesian"),
    ("sequential_tau", 0.0),
])
def test_invalid_values_raise_naming_the_field(field, value):
    with pytest.raises(ValidationError) as err:
        Policy(**{field: value})
    assert field in str(err.value)


def test_unknown_fields_and_bad_margins_are_rejected():
    with pytest.raises(ValidationError, match="confidence"):
        Policy(confidence=0.9)
    with pytest.raises(ValidationError, match="success"):
        Policy(guardrail_margins={"success": -0.01})
    assert Policy(guardrail_margins={"latency": 0.1}).guardrail_margins.latency == 0.1


def test_policy_is_frozen_and_serialisable():
    p = Policy()
    with pytest.raises(ValidationError):
        p.min_sample_size = 3
    assert Policy.model_validate(p.model_dump()) == p
    assert Policy.model_validate_json(p.model_dump_json()) == p


# --- power -------------------------------------------------------------------


@pytest.mark.parametrize("e,alpha,power,ratio", [(0.2, 0.05, 0.8, 1.0), (0.1, 0.01, 0.9, 1.0),
                                                 (0.35, 0.1, 0.8, 2.0), (0.05, 0.05, 0.8, 0.5)])
def test_fixed_horizon_sample_size_matches_statsmodels(e, alpha, power, ratio):
    ours = fixed_horizon_sample_size(e, alpha, power, ratio)
    # one-sided at alpha/2: exactly the same normal approximation
    one = NormalIndPower().solve_power(effect_size=e, alpha=alpha / 2, power=power, ratio=ratio,
                                       alternative="larger")
    assert ours == pytest.approx(one, rel=1e-6)
    # two-sided also counts significance in the wrong direction: negligibly smaller
    two = NormalIndPower().solve_power(effect_size=e, alpha=alpha, power=power, ratio=ratio,
                                       alternative="two-sided")
    assert ours == pytest.approx(two, rel=2e-3)


def test_sequential_needs_more_than_fixed_and_scales_with_effect():
    for e in (0.05, 0.1, 0.2, 0.5):
        assert sequential_sample_size(e) > fixed_horizon_sample_size(e)
    assert sequential_sample_size(0.1) > sequential_sample_size(0.2) > sequential_sample_size(0.3)
    assert sequential_sample_size(0.2, alpha=0.01) > sequential_sample_size(0.2, alpha=0.05)
    with pytest.raises(ValueError, match="effect_size"):
        sequential_sample_size(0.0)


def test_sequential_sample_size_solves_its_equation():
    e, alpha, power = 0.2, 0.05, 0.8
    n = sequential_sample_size(e, alpha, power)
    v = 2.0 / n  # per-unit-variance V with equal arms
    r = 0.2**2 / v
    b = math.sqrt((1 + r) / r * (math.log1p(r) - 2 * math.log(alpha)))
    assert e / math.sqrt(v) == pytest.approx(b + sps.norm.ppf(power), rel=1e-9)


def test_sequential_sample_size_gives_at_least_the_power_in_simulation():
    # 1,000 seeded experiments, looks every 10 per arm up to the computed n: detection >= 80%.
    from feedback_loop_dagster.lib.stats.sequential import msprt_update_arrays

    rng = np.random.default_rng(123)
    e = 0.3
    n = math.ceil(sequential_sample_size(e))
    k = 1000
    c = rng.normal(0, 1, (k, n)).cumsum(1)
    t = rng.normal(e, 1, (k, n)).cumsum(1)
    p = lo = hi = None
    for m in range(10, n + 1, 10):
        delta = (t[:, m - 1] - c[:, m - 1]) / m
        V = np.full(k, 2.0 / m)
        p, lo, hi = msprt_update_arrays(delta, V, np.full(k, 0.04), 0.05, p, lo, hi)
    power = (lo > 0).mean()
    # at least the planned power (early looks add some), but not wildly more: the plan is not loose
    assert 0.8 <= power <= 0.97


# --- SRM ---------------------------------------------------------------------


@pytest.mark.parametrize("n_c,n_t,share", [(500, 500, 0.5), (520, 480, 0.5), (600, 400, 0.5),
                                           (700, 300, 0.3), (10, 0, 0.5), (1, 2, 0.5)])
def test_srm_matches_scipy_chisquare(n_c, n_t, share):
    total = n_c + n_t
    ref = sps.chisquare([n_c, n_t], [total * (1 - share), total * share])
    stat, p = srm_chi_square(n_c, n_t, share)
    assert stat == pytest.approx(ref.statistic, rel=1e-12, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)
    assert srm_p_value_arrays(np.array([n_c]), np.array([n_t]), share)[0] == pytest.approx(p, rel=1e-9, abs=1e-15)


def test_srm_edge_cases():
    assert srm_p_value(0, 0) == 1.0
    assert srm_p_value(600, 400) < 0.001 < srm_p_value(520, 480)
    with pytest.raises(ValueError):
        srm_p_value(1, 1, 1.0)
