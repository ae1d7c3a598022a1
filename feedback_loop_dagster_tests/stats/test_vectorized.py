"""The vectorised twins used by the benchmark equal the scalar engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedback_loop_dagster.lib.stats import ArmStats, LogMeanStats, MeanStats, Policy, ProportionStats, evaluate_experiment
from feedback_loop_dagster.lib.stats.devtools.estimates import student_core
from feedback_loop_dagster.lib.stats.devtools.vectorized import (
    APPLY,
    CONTINUE,
    INCONCLUSIVE,
    INVALID,
    REJECT,
    MetricArrays,
    moments_from_sums,
    sequential_decisions,
    student_t_p_arrays,
    two_proportion_z_arrays,
    welch_arrays,
)
from feedback_loop_dagster.lib.stats.fixed_horizon import two_proportion_z_core, welch_core
from feedback_loop_dagster.lib.stats.sufficient import moments

CODE = {"continue": CONTINUE, "apply": APPLY, "reject": REJECT, "invalid": INVALID, "inconclusive": INCONCLUSIVE}


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


def _arrays(metric, sums, looks):
    (sc, sqc), (st_, sqt) = sums
    n = np.broadcast_to(np.asarray(looks, dtype=float), sc.shape)
    kind = "proportion" if metric == "success" else "mean"
    mc, vc = moments_from_sums(n, sc, sqc, kind)
    mt, vt = moments_from_sums(n, st_, sqt, kind)
    return MetricArrays(metric, n, mc, vc, n, mt, vt)


def _stats(metric, sums, i, j, m):
    (sc, sqc), (st_, sqt) = sums
    if metric == "success":
        return ProportionStats(m, int(round(sc[i, j]))), ProportionStats(m, int(round(st_[i, j])))
    cls = LogMeanStats if metric == "latency" else MeanStats
    return cls(m, sc[i, j], sqc[i, j]), cls(m, st_[i, j], sqt[i, j])


@pytest.mark.parametrize("metric,ftype,effect,guards,expect", [
    ("latency", "performance", 0.25, (), "reject"),
    ("success", "reliability", 0.06, (), "apply"),
    ("quality", "quality", -0.2, (), "reject"),
    ("quality", "quality", 0.0, (), None),
    # a faster candidate with a success guardrail that is unchanged, worse by 5 or 12 points
    ("latency", "performance", -0.3, (("success", 0.0),), "apply"),
    ("latency", "performance", -0.3, (("success", -0.05),), None),
    ("latency", "performance", -0.3, (("success", -0.12),), "reject"),
    # a better quality with two guardrails; latency (sd 1 on the log scale) cannot show
    # non-inferiority within a 10% margin by 400 per arm, so it keeps the experiment running
    ("quality", "quality", 0.3, (("latency", 0.05), ("success", 0.0)), None),
])
def test_sequential_decisions_equal_evaluate_experiment(metric, ftype, effect, guards, expect):
    rng = np.random.default_rng(5)
    k, looks = 40, list(range(10, 401, 10))
    sums = _cumulative(rng, metric, k, 400, effect, looks)
    guard_sums = [(g, _cumulative(rng, g, k, 400, e, looks)) for g, e in guards]
    pol = Policy(feedback_type=ftype, min_sample_size=30, max_sample_per_arm=380)
    codes, pvals = sequential_decisions(_arrays(metric, sums, looks), pol,
                                        [_arrays(g, gs, looks) for g, gs in guard_sums])
    seen = set()
    for i in range(k):
        prev = None
        for j, m in enumerate(looks):
            c, t = {}, {}
            for name, s in [(metric, sums), *guard_sums]:
                c[name], t[name] = _stats(name, s, i, j, m)
            r = evaluate_experiment(ArmStats(m, **c), ArmStats(m, **t), pol, previous=prev)
            assert CODE[r.decision] == codes[i, j], (i, j, r.reason)
            assert r.p_value == pytest.approx(pvals[i, j], rel=1e-9, abs=1e-300)
            seen.add(r.decision)
            prev = r
    assert "continue" in seen and "inconclusive" in seen
    if expect:
        assert expect in seen
    if expect is None and guards:
        assert "apply" not in seen


def test_a_zero_variance_look_is_twinned_too():
    # 5/5 vs 5/5 successes at the first looks: the engine's variance floor and state carrying
    looks = [5, 40, 80]
    sc = np.array([[5.0, 38.0, 74.0]])
    st_ = np.array([[5.0, 30.0, 60.0]])
    n = np.array([looks], dtype=float)
    mc, vc = moments_from_sums(n, sc, kind="proportion")
    mt, vt = moments_from_sums(n, st_, kind="proportion")
    pol = Policy(feedback_type="reliability", min_sample_size=30)
    codes, pvals = sequential_decisions(MetricArrays("success", n, mc, vc, n, mt, vt), pol)
    prev = None
    for j, m in enumerate(looks):
        r = evaluate_experiment(ArmStats(m, success=ProportionStats(m, int(sc[0, j]))),
                                ArmStats(m, success=ProportionStats(m, int(st_[0, j]))), pol, previous=prev)
        assert CODE[r.decision] == codes[0, j] and r.p_value == pytest.approx(pvals[0, j], rel=1e-9)
        prev = r


def test_sequential_decisions_handle_srm_and_policy_switches():
    looks = np.array([[100.0, 200.0]])
    m = np.array([[0.0, 0.0]])
    v = np.array([[1.0, 1.0]])
    better = MetricArrays("quality", looks, m, v, looks, m + 1.0, v)
    codes, _ = sequential_decisions(better, Policy(feedback_type="quality"), executions_c=looks,
                                    executions_t=looks * 0.5)
    assert (codes == INVALID).all()
    codes, _ = sequential_decisions(better, Policy(feedback_type="quality", require_review=True))
    assert (codes == CONTINUE).all()
    with pytest.raises(ValueError, match="sequential"):
        sequential_decisions(better, Policy(feedback_type="quality", test_method="fixed_horizon"))
    with pytest.raises(ValueError, match="only primary"):
        sequential_decisions(better, Policy(feedback_type="all"))
    assert not math.isnan(codes.sum())
