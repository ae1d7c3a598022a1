"""The vectorised twins used by the benchmark equal the scalar engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedback_loop_dagster.lib.stats import ArmStats, LogMeanStats, MeanStats, Policy, ProportionStats, evaluate_experiment
from feedback_loop_dagster.lib.stats.fixed_horizon import student_core, two_proportion_z_core, welch_core
from feedback_loop_dagster.lib.stats.sufficient import moments
from feedback_loop_dagster.lib.stats.vectorized import (
    APPLY,
    CONTINUE,
    INVALID,
    REJECT,
    moments_from_sums,
    sequential_decisions,
    student_t_p_arrays,
    two_proportion_z_arrays,
    welch_arrays,
)

CODE = {"continue": CONTINUE, "apply": APPLY, "reject": REJECT, "invalid": INVALID}


def test_moments_from_sums_equal_scalar():
    rng = np.random.default_rng(0)
    cases = [MeanStats.from_values(rng.normal(0, 1, k)) for k in (0, 1, 2, 5, 50)]
    cases.append(MeanStats.from_values([0.3] * 40))
    n = np.array([c.n for c in cases])
    m, v = moments_from_sums(n, np.array([c.total for c in cases]), np.array([c.total_sq for c in cases]))
    for i, c in enumerate(cases):
        assert (m[i], v[i]) == pytest.approx(moments(c)[1:], rel=1e-12, abs=1e-300)
    props = [ProportionStats(0, 0), ProportionStats(10, 3), ProportionStats(7, 7)]
    m, v = moments_from_sums(np.array([p.n for p in props]), np.array([p.successes for p in props]),
                             kind="proportion")
    for i, p in enumerate(props):
        assert (m[i], v[i]) == pytest.approx(moments(p)[1:], rel=1e-12)


def test_fixed_horizon_arrays_equal_scalar():
    rng = np.random.default_rng(1)
    k = 200
    n_c, n_t = rng.integers(5, 500, k).astype(float), rng.integers(5, 500, k).astype(float)
    m_c, m_t = rng.normal(0, 1, k), rng.normal(0, 1, k)
    v_c, v_t = rng.uniform(0.1, 3, k), rng.uniform(0.1, 3, k)
    eff, se, p, lo, hi = welch_arrays(m_c, v_c, n_c, m_t, v_t, n_t, 0.05)
    ps = student_t_p_arrays(m_c, v_c, n_c, m_t, v_t, n_t)
    x_c = np.floor(rng.uniform(0.05, 0.95, k) * n_c)
    x_t = np.floor(rng.uniform(0.05, 0.95, k) * n_t)
    ze, zp, zlo, zhi = two_proportion_z_arrays(x_c, n_c, x_t, n_t, 0.05)
    for i in range(k):
        w = welch_core(int(n_c[i]), m_c[i], v_c[i], int(n_t[i]), m_t[i], v_t[i], 0.05)
        assert (eff[i], se[i], p[i], lo[i], hi[i]) == pytest.approx(
            (w.effect, w.se, w.p_value, w.ci_lower, w.ci_upper), rel=1e-9, abs=1e-12)
        s = student_core(int(n_c[i]), m_c[i], v_c[i], int(n_t[i]), m_t[i], v_t[i], 0.05)
        assert ps[i] == pytest.approx(s.p_value, rel=1e-9, abs=1e-12)
        z = two_proportion_z_core(int(n_c[i]), int(x_c[i]), int(n_t[i]), int(x_t[i]), 0.05)
        assert (ze[i], zp[i], zlo[i], zhi[i]) == pytest.approx(
            (z.effect, z.p_value, z.ci_lower, z.ci_upper), rel=1e-9, abs=1e-12)


def _cumulative(rng, metric, k, n_max, effect, looks):
    if metric == "success":
        c = (rng.random((k, n_max)) < 0.8).astype(float)
        t = (rng.random((k, n_max)) < 0.8 + effect).astype(float)
    else:
        c = rng.normal(0.0, 1.0, (k, n_max))
        t = rng.normal(effect, 1.0, (k, n_max))
    idx = np.asarray(looks) - 1
    return [(np.cumsum(x, 1)[:, idx], np.cumsum(x * x, 1)[:, idx]) for x in (c, t)]


@pytest.mark.parametrize("metric,ftype,effect", [("latency", "performance", 0.25), ("success", "reliability", 0.06),
                                                 ("quality", "quality", -0.2), ("quality", "quality", 0.0)])
def test_sequential_decisions_equal_evaluate_experiment(metric, ftype, effect):
    rng = np.random.default_rng(5)
    k, looks = 40, list(range(10, 401, 10))
    (sc, sqc), (st_, sqt) = _cumulative(rng, metric, k, 400, effect, looks)
    n = np.broadcast_to(np.asarray(looks, dtype=float), sc.shape)
    kind = "proportion" if metric == "success" else "mean"
    mc, vc = moments_from_sums(n, sc, sqc, kind)
    mt, vt = moments_from_sums(n, st_, sqt, kind)
    pol = Policy(feedback_type=ftype, min_sample_size=30)
    codes, pvals = sequential_decisions(metric, n, mc, vc, n, mt, vt, pol)
    seen = set()
    for i in range(k):
        prev = None
        for j, m in enumerate(looks):
            if metric == "success":
                c = ArmStats(m, success=ProportionStats(m, int(round(sc[i, j]))))
                t = ArmStats(m, success=ProportionStats(m, int(round(st_[i, j]))))
            else:
                cls = LogMeanStats if metric == "latency" else MeanStats
                c = ArmStats(m, **{metric: cls(m, sc[i, j], sqc[i, j])})
                t = ArmStats(m, **{metric: cls(m, st_[i, j], sqt[i, j])})
            r = evaluate_experiment(c, t, pol, previous=prev)
            assert CODE[r.decision] == codes[i, j], (i, j, r.reason)
            assert r.p_value == pytest.approx(pvals[i, j], rel=1e-9, abs=1e-300)
            seen.add(r.decision)
            prev = r
    assert "continue" in seen
    if effect:  # higher is better except for latency, whose values here rise with the effect
        better = (effect > 0) != (metric == "latency")
        assert ("apply" if better else "reject") in seen


def test_sequential_decisions_handle_srm_and_policy_switches():
    looks = np.array([[100.0, 200.0]])
    m = np.array([[0.0, 0.0]])
    v = np.array([[1.0, 1.0]])
    codes, _ = sequential_decisions("quality", looks, m, v, looks, m + 1.0, v, Policy(feedback_type="quality"),
                                    executions_c=looks, executions_t=looks * 0.5)
    assert (codes == INVALID).all()
    codes, _ = sequential_decisions("quality", looks, m, v, looks, m + 1.0, v,
                                    Policy(feedback_type="quality", require_review=True))
    assert (codes == CONTINUE).all()
    with pytest.raises(ValueError):
        sequential_decisions("quality", looks, m, v, looks, m, v, Policy(test_method="fixed_horizon"))
    assert not math.isnan(codes.sum())
