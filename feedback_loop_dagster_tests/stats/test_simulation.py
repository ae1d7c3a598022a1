"""Small seeded simulations of the properties the benchmark measures at scale.

Looks every 10 executions per arm from 30 to 1,000, through the vectorised
twin of the engine (proven equal to ``evaluate_experiment`` in
test_vectorized.py).  Each cell uses 400 experiments: the bounds below leave
room for Monte-Carlo error (s.e. ~1.1 points at 5 %) but would catch a broken
rule (the original rule's false-positive rate is ~35 %).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedback_loop_dagster.lib.stats import ArmStats, Policy, ProportionStats, evaluate_experiment
from feedback_loop_dagster.lib.stats.decision import _primary_need
from feedback_loop_dagster.lib.stats.devtools.vectorized import (
    APPLY,
    CONTINUE,
    REJECT,
    MetricArrays,
    moments_from_sums,
    sequential_decisions,
    student_t_p_arrays,
)
from feedback_loop_dagster.lib.stats.power import fixed_horizon_sample_size, sequential_sample_size

LOOKS = np.arange(30, 1001, 10)
K = 400


def simulate(seed: int, kind: str, shift: float, base: float = 0.9):
    rng = np.random.default_rng(seed)
    shape = (K, int(LOOKS[-1]))
    if kind == "bernoulli":
        c = (rng.random(shape) < base).astype(float)
        t = (rng.random(shape) < base + shift).astype(float)
        metric, ftype = "success", "reliability"
    elif kind == "lognormal":
        c = rng.normal(7.0, 0.5, shape)  # log durations
        t = rng.normal(7.0 + shift, 0.5, shape)
        metric, ftype = "latency", "performance"
    else:
        c = rng.normal(0.7, 0.15, shape)
        t = rng.normal(0.7 + shift, 0.15, shape)
        metric, ftype = "quality", "quality"
    idx = LOOKS - 1
    n = np.broadcast_to(LOOKS.astype(float), (K, LOOKS.size))
    sc, st = np.cumsum(c, 1)[:, idx], np.cumsum(t, 1)[:, idx]
    qc, qt = np.cumsum(c * c, 1)[:, idx], np.cumsum(t * t, 1)[:, idx]
    prop = "proportion" if kind == "bernoulli" else "mean"
    mc, vc = moments_from_sums(n, sc, qc, prop)
    mt, vt = moments_from_sums(n, st, qt, prop)
    codes, _ = sequential_decisions(MetricArrays(metric, n, mc, vc, n, mt, vt), Policy(feedback_type=ftype))
    decided = codes != CONTINUE
    first = np.where(decided.any(1), codes[np.arange(K), decided.argmax(1)], CONTINUE)
    at = np.where(decided.any(1), LOOKS[decided.argmax(1)], -1)
    # the original rule on the same data (raw values; for latency the durations)
    if kind == "lognormal":
        c, t = np.exp(c), np.exp(t)
        sc, st = np.cumsum(c, 1)[:, idx], np.cumsum(t, 1)[:, idx]
        qc, qt = np.cumsum(c * c, 1)[:, idx], np.cumsum(t * t, 1)[:, idx]
    rc, rvc = moments_from_sums(n, sc, qc)
    rt, rvt = moments_from_sums(n, st, qt)
    legacy = (1.0 - student_t_p_arrays(rc, rvc, n, rt, rvt, n)) >= 0.95
    return first, at, legacy.any(1), (legacy & (rt > rc)).any(1)


@pytest.mark.parametrize("kind,seed", [("normal", 1), ("lognormal", 2), ("bernoulli", 3)])
def test_aa_false_positive_rate_at_most_alpha_while_the_original_rule_fails(kind, seed):
    first, _, legacy_declares, legacy_applies = simulate(seed, kind, 0.0)
    ours = (first != CONTINUE).mean()
    assert ours <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / K)
    assert legacy_declares.mean() > 0.25  # the bug the engine fixes
    assert legacy_applies.mean() > 0.10
    assert (first == APPLY).mean() <= ours


@pytest.mark.parametrize("kind,shift,seed", [("normal", -0.07, 4), ("lognormal", math.log(1.1), 5),
                                             ("bernoulli", -0.09, 6)])
def test_planted_regression_is_never_applied(kind, shift, seed):
    first, _, _, legacy_applies = simulate(seed, kind, shift)
    assert (first == APPLY).sum() == 0
    assert (first == REJECT).mean() > 0.8
    if kind == "lognormal":  # slower = larger values: the original rule "applied" it
        assert legacy_applies.mean() > 0.9


@pytest.mark.parametrize("kind,shift,seed", [("normal", 0.3 * 0.15, 7), ("lognormal", -0.3 * 0.5, 8),
                                             ("bernoulli", 0.12, 9)])
def test_planted_improvement_is_detected_early(kind, shift, seed):
    first, at, _, _ = simulate(seed, kind, shift, base=0.8)
    assert (first == APPLY).mean() >= 0.97
    assert np.median(at[first == APPLY]) < 300
    assert (first == REJECT).sum() == 0


def test_required_sample_matches_the_power_functions():
    # a standardised effect with 3 significant digits, so the engine's rounding is exact
    pol = Policy(feedback_type="quality", minimum_detectable_effect=0.05, min_sample_size=10)
    mean, sd = 0.8, 0.2  # effect 0.04 / 0.2 = 0.2 sd
    seq = _primary_need("mean", mean, sd * sd, sd * sd, pol, 0.05, 0.8)
    assert seq == (math.ceil(sequential_sample_size(0.2)),) * 2
    fixed = _primary_need("mean", mean, sd * sd, sd * sd, Policy(feedback_type="quality", test_method="fixed_horizon"),
                          0.05, 0.8)
    assert fixed == (math.ceil(fixed_horizon_sample_size(0.2)),) * 2
    uneven = _primary_need("mean", mean, sd * sd, sd * sd, Policy(traffic_split=0.25), 0.05, 0.8)
    assert uneven[1] == math.ceil(sequential_sample_size(0.2, ratio=1 / 3) / 3)


def test_a_sensor_looking_after_every_execution_keeps_p_monotone_and_never_applies_a_null():
    # scalar engine, one look per new execution pair, null data: 30 seeded experiments; the
    # always-valid state is carried from the first look with min_sample_size per arm on
    rng = np.random.default_rng(10)
    pol = Policy(feedback_type="reliability", min_sample_size=30)
    applied = 0
    for _ in range(30):
        c = rng.random(300) < 0.9
        t = rng.random(300) < 0.9
        prev, last_p = None, 1.0
        for n in range(1, 301):
            r = evaluate_experiment(ArmStats(n, ProportionStats(n, int(c[:n].sum()))),
                                    ArmStats(n, ProportionStats(n, int(t[:n].sum()))), pol, previous=prev)
            if n > 30:
                assert r.p_value <= last_p
            last_p, prev = r.p_value, r
            if r.decision == "apply":
                applied += 1
                break
    assert applied <= 3
