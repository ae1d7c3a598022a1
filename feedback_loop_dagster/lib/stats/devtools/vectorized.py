"""Vectorised twins of the engine for simulations (one array element per experiment).

The benchmark (``benchmarks/ab_engine_simulation.py``) runs thousands of
experiments with ~100 looks each; calling :func:`.evaluate_experiment` for
every look would take minutes, so these functions apply the same formulas to
numpy arrays.  ``feedback_loop_dagster_tests/stats/test_vectorized.py`` checks
that they equal the scalar engine on random inputs, including the complete
decision rule for a single primary metric with guardrails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import special

from ..fixed_horizon import normal_quantile
from ..metrics import METRICS, primary_metrics
from ..noninferiority import mixture_tau2, one_sided_multiplier_arrays
from ..policy import Policy
from ..sequential import msprt_update_arrays
from ..sufficient import _VAR_REL_EPS

__all__ = [
    "moments_from_sums",
    "welch_arrays",
    "student_t_p_arrays",
    "two_proportion_z_arrays",
    "srm_p_value_arrays",
    "sequential_decisions",
    "MetricArrays",
    "CONTINUE",
    "APPLY",
    "REJECT",
    "INVALID",
    "INCONCLUSIVE",
]

CONTINUE, APPLY, REJECT, INVALID, INCONCLUSIVE = 0, 1, 2, 3, 4


def moments_from_sums(n: np.ndarray, total: np.ndarray, total_sq: np.ndarray | None = None,
                      kind: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """``(mean, variance)`` as :class:`.MeanStats` / :class:`.ProportionStats` compute them.

    ``kind="proportion"``: ``total`` = successes, variance ``p (1 - p)``;
    otherwise the guarded sample variance (ddof=1; 0 when n < 2).
    """
    n = np.asarray(n, dtype=float)
    total = np.asarray(total, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, total / np.where(n > 0, n, 1.0), 0.0)
        if kind == "proportion":
            return mean, mean * (1.0 - mean)
        total_sq = np.asarray(total_sq, dtype=float)
        ss = total_sq - total * mean
        var = np.where((n >= 2) & (ss > 0) & (ss > _VAR_REL_EPS * total_sq),
                       ss / np.where(n >= 2, n - 1.0, 1.0), 0.0)
    return mean, var


def welch_arrays(mean_c, var_c, n_c, mean_t, var_t, n_t, alpha: float = 0.05):
    """Two-sided Welch test: ``(effect, se, p, ci_lower, ci_upper)`` (regular inputs: n >= 2, se > 0)."""
    a = var_c / n_c
    b = var_t / n_t
    se2 = a + b
    se = np.sqrt(se2)
    df = se2 * se2 / (a * a / (n_c - 1) + b * b / (n_t - 1))
    effect = mean_t - mean_c
    t = effect / se
    p = np.clip(2.0 * special.stdtr(df, -np.abs(t)), 0.0, 1.0)
    q = special.stdtrit(df, 1.0 - alpha / 2.0)
    return effect, se, p, effect - q * se, effect + q * se


def student_t_p_arrays(mean_c, var_c, n_c, mean_t, var_t, n_t):
    """Two-sided pooled-variance Student t p-value (the original design's test)."""
    df = n_c + n_t - 2.0
    sp2 = ((n_c - 1) * var_c + (n_t - 1) * var_t) / df
    se = np.sqrt(sp2 * (1.0 / n_c + 1.0 / n_t))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, (mean_t - mean_c) / np.where(se > 0, se, 1.0), 0.0)
    return np.clip(2.0 * special.stdtr(df, -np.abs(t)), 0.0, 1.0)


def two_proportion_z_arrays(x_c, n_c, x_t, n_t, alpha: float = 0.05):
    """Two-proportion z test: ``(effect, p, ci_lower, ci_upper)`` (pooled p, Wald interval)."""
    pc, pt = x_c / n_c, x_t / n_t
    pooled = (x_c + x_t) / (n_c + n_t)
    se0 = np.sqrt(pooled * (1 - pooled) * (1.0 / n_c + 1.0 / n_t))
    effect = pt - pc
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se0 > 0, effect / np.where(se0 > 0, se0, 1.0), 0.0)
    p = np.clip(special.erfc(np.abs(z) / math.sqrt(2.0)), 0.0, 1.0)
    se = np.sqrt(pc * (1 - pc) / n_c + pt * (1 - pt) / n_t)
    q = normal_quantile(1.0 - alpha / 2.0)
    return effect, p, effect - q * se, effect + q * se


def srm_p_value_arrays(n_c, n_t, treatment_share: float = 0.5):
    n_c = np.asarray(n_c, dtype=float)
    n_t = np.asarray(n_t, dtype=float)
    total = n_c + n_t
    with np.errstate(divide="ignore", invalid="ignore"):
        e_t = total * treatment_share
        e_c = total - e_t
        stat = np.where(total > 0, (n_c - e_c) ** 2 / np.where(total > 0, e_c, 1.0)
                        + (n_t - e_t) ** 2 / np.where(total > 0, e_t, 1.0), 0.0)
    return special.erfc(np.sqrt(stat / 2.0))


@dataclass(frozen=True)
class MetricArrays:
    """Cumulative statistics of one metric at every look: arrays of shape ``(experiments, looks)``
    (``moments_from_sums`` gives the means and variances)."""

    metric: str
    n_c: np.ndarray
    mean_c: np.ndarray
    var_c: np.ndarray
    n_t: np.ndarray
    mean_t: np.ndarray
    var_t: np.ndarray


class _Chain:
    """The always-valid state of one metric carried from look to look, as ``previous`` does:
    neutral until the metric's first look with ``min_sample_size`` in both arms."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.p = np.full(shape, np.inf)
        self.lo = np.full(shape, -np.inf)
        self.hi = np.full(shape, np.inf)
        self.ni = np.full(shape, -np.inf)  # improvement scale

    def look(self, m: MetricArrays, j: int, policy: Policy, gate: int, margin: float | None):
        """``(ready, p, improvement lo, improvement hi, ni bound on the improvement scale)`` at look ``j``."""
        spec = METRICS[m.metric]
        alpha = policy.significance_level
        nc, nt = m.n_c[:, j], m.n_t[:, j]
        vc = _spread_arrays(nc, m.var_c[:, j])
        vt = _spread_arrays(nt, m.var_t[:, j])
        ready = (nc >= gate) & (nt >= gate)
        regular_n = (nc >= 2) & (nt >= 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = np.where(regular_n, vc / np.where(nc > 0, nc, 1.0) + vt / np.where(nt > 0, nt, 1.0), np.inf)
        delta = m.mean_t[:, j] - m.mean_c[:, j]
        delta = np.where(np.isclose(m.mean_t[:, j], m.mean_c[:, j], rtol=1e-9, atol=1e-12) & (variance <= 0), 0.0, delta)
        tau2 = policy.sequential_tau ** 2 * 0.5 * (vc + vt)
        neutral = ~ready
        p, lo, hi = msprt_update_arrays(delta, variance, tau2, alpha, np.where(neutral, np.inf, self.p),
                                        np.where(neutral, -np.inf, self.lo), np.where(neutral, np.inf, self.hi))
        self.p, self.lo, self.hi = np.where(ready, p, self.p), np.where(ready, lo, self.lo), np.where(ready, hi, self.hi)
        ilo, ihi = (lo, hi) if spec.direction > 0 else (-hi, -lo)
        ni = None
        if margin is not None:
            m_scale = spec.margin_on_test_scale(margin)
            ni_tau2 = (np.full(delta.shape, mixture_tau2(m_scale, 0.0, 0.0)) if m_scale > 0
                       else policy.sequential_tau ** 2 * 0.5 * (vc + vt))
            finite = np.isfinite(variance) & (variance > 0) & (ni_tau2 > 0)
            v = np.where(finite, variance, 1.0)
            t2 = np.where(finite, ni_tau2, 1.0)
            bound = np.where(finite, spec.direction * delta - one_sided_multiplier_arrays(v, t2, alpha) * np.sqrt(v),
                             -np.inf)
            ni = np.maximum(bound, np.where(neutral, -np.inf, self.ni))
            self.ni = np.where(ready, ni, self.ni)
        return ready, p, ilo, ihi, ni


def _spread_arrays(n: np.ndarray, var: np.ndarray) -> np.ndarray:
    """The engine's variance of an arm (``decision._spread``): ``n / (n+1)^2`` for a constant arm."""
    return np.where((n >= 2) & (var <= 0.0), n / ((n + 1.0) * (n + 1.0)), var)


def sequential_decisions(
    primary: MetricArrays,
    policy: Policy,
    guardrails: Sequence[MetricArrays] = (),
    executions_c: np.ndarray | None = None,
    executions_t: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decision of :func:`.evaluate_experiment` at every look, for one primary metric and any
    guardrails.

    ``primary`` must be the policy's only primary metric; ``guardrails`` are other metrics
    (each with its margin from the policy); ``policy.test_method`` must be ``sequential``.
    The always-valid state is carried from look to look as the engine does with ``previous``;
    ``executions_*`` (default: the primary's n) drive the SRM check and
    ``max_sample_per_arm`` (``days_run`` is not modelled).  Returns ``(codes, p_values)``:
    codes ``CONTINUE``/``APPLY``/``REJECT``/``INCONCLUSIVE``/``INVALID`` per look and the
    primary's monotone p-values; an experiment that stops at its first decision should ignore
    later looks.
    """
    if policy.test_method != "sequential":
        raise ValueError("sequential_decisions needs a sequential policy")
    if METRICS[primary.metric].name not in primary_metrics(policy.feedback_type) or len(
            primary_metrics(policy.feedback_type)) != 1:
        raise ValueError(f"{primary.metric} must be the only primary metric of the policy")
    alpha = policy.significance_level
    exec_c = primary.n_c if executions_c is None else np.asarray(executions_c, dtype=float)
    exec_t = primary.n_t if executions_t is None else np.asarray(executions_t, dtype=float)
    shape = primary.n_c.shape
    codes = np.zeros(shape, dtype=np.int8)
    pvals = np.ones(shape)
    gate = max(2, policy.min_sample_size)
    chain = _Chain(shape[:1])
    guard_chains = [(g, _Chain(shape[:1]), policy.guardrail_margins.for_metric(g.metric)) for g in guardrails]
    for j in range(shape[1]):
        ready, p, ilo, ihi, _ = chain.look(primary, j, policy, gate, None)
        sig = p <= alpha
        better = sig & (ilo > 0)
        harm = sig & (ihi < 0)
        breach = np.zeros(shape[0], dtype=bool)
        pending = np.zeros(shape[0], dtype=bool)
        for g, g_chain, margin in guard_chains:
            g_ready, _, _, g_ihi, ni = g_chain.look(g, j, policy, gate, margin)
            m_scale = METRICS[g.metric].margin_on_test_scale(margin)
            has_data = (g.n_c[:, j] > 0) | (g.n_t[:, j] > 0)
            g_breach = has_data & g_ready & (g_ihi < -m_scale)
            breach |= g_breach
            pending |= has_data & ~g_breach & ~(g_ready & (ni > -m_scale))
        has_data = (primary.n_c[:, j] > 0) | (primary.n_t[:, j] > 0)
        apply_ = better & ((1.0 - p) >= policy.auto_apply_threshold) & ~pending
        code = np.where(harm | breach, REJECT, np.where(apply_, APPLY, CONTINUE))
        code = np.where(ready & has_data, code, CONTINUE)
        cap = policy.max_sample_per_arm
        if cap is not None:
            code = np.where((code == CONTINUE) & (exec_c[:, j] >= cap) & (exec_t[:, j] >= cap), INCONCLUSIVE, code)
        srm_ok = srm_p_value_arrays(exec_c[:, j], exec_t[:, j], policy.traffic_split) >= policy.srm_threshold
        code = np.where(srm_ok, code, INVALID)
        if not policy.enable_ab_testing or not policy.auto_apply or policy.require_review:
            code = np.where(code == APPLY, CONTINUE, code)
            if not policy.enable_ab_testing:
                code = np.where((code == REJECT) | (code == INCONCLUSIVE), CONTINUE, code)
        codes[:, j] = code
        pvals[:, j] = p
    return codes, pvals
