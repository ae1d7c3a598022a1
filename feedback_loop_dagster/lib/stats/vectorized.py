"""Vectorised twins of the engine for simulations (one array element per experiment).

The benchmark (``benchmarks/ab_engine_simulation.py``) runs thousands of
experiments with ~100 looks each; calling :func:`.evaluate_experiment` for
every look would take minutes, so these functions apply the same formulas to
numpy arrays.  ``feedback_loop_dagster_tests/stats/test_vectorized.py`` checks
that they equal the scalar engine on random inputs, including the complete
decision rule for a single primary metric.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from .fixed_horizon import normal_quantile
from .metrics import METRICS
from .policy import Policy
from .sequential import msprt_update_arrays
from .sufficient import _VAR_REL_EPS

__all__ = [
    "moments_from_sums",
    "welch_arrays",
    "student_t_p_arrays",
    "two_proportion_z_arrays",
    "srm_p_value_arrays",
    "sequential_decisions",
    "CONTINUE",
    "APPLY",
    "REJECT",
    "INVALID",
]

CONTINUE, APPLY, REJECT, INVALID = 0, 1, 2, 3


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


def sequential_decisions(
    metric: str,
    n_c: np.ndarray,
    mean_c: np.ndarray,
    var_c: np.ndarray,
    n_t: np.ndarray,
    mean_t: np.ndarray,
    var_t: np.ndarray,
    policy: Policy,
    executions_c: np.ndarray | None = None,
    executions_t: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decision of :func:`.evaluate_experiment` at every look, for one primary metric.

    Inputs are arrays of shape ``(experiments, looks)`` holding the cumulative
    statistics of ``metric`` (the policy's only primary metric, and no
    guardrail data) at each look; ``policy.test_method`` must be
    ``sequential``.  The always-valid state is carried from look to look as
    the engine does with ``previous``.  Returns ``(codes, p_values)``: codes
    ``CONTINUE``/``APPLY``/``REJECT``/``INVALID`` per look and the monotone
    p-values; an experiment that stops at its first APPLY/REJECT should
    ignore later looks.
    """
    if policy.test_method != "sequential":
        raise ValueError("sequential_decisions needs a sequential policy")
    spec = METRICS[metric]
    alpha = policy.significance_level
    n_c = np.asarray(n_c, dtype=float)
    n_t = np.asarray(n_t, dtype=float)
    exec_c = n_c if executions_c is None else np.asarray(executions_c, dtype=float)
    exec_t = n_t if executions_t is None else np.asarray(executions_t, dtype=float)
    shape = n_c.shape
    codes = np.zeros(shape, dtype=np.int8)
    pvals = np.ones(shape)
    prev_p = prev_lo = prev_hi = None
    gate = max(2, policy.min_sample_size)
    tau2_factor = policy.sequential_tau ** 2 * 0.5
    for j in range(shape[1]):
        nc, nt = n_c[:, j], n_t[:, j]
        mc, mt, vc, vt = mean_c[:, j], mean_t[:, j], var_c[:, j], var_t[:, j]
        regular_n = (nc >= 2) & (nt >= 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = np.where(regular_n, vc / np.where(nc > 0, nc, 1.0) + vt / np.where(nt > 0, nt, 1.0), np.inf)
        delta = mt - mc
        same = np.isclose(mt, mc, rtol=1e-9, atol=1e-12) & (variance <= 0)
        delta = np.where(same, 0.0, delta)
        tau2 = tau2_factor * (vc + vt)
        p, lo, hi = msprt_update_arrays(delta, variance, tau2, alpha, prev_p, prev_lo, prev_hi)
        prev_p, prev_lo, prev_hi = p, lo, hi
        if spec.direction > 0:
            ilo, ihi = lo, hi
        else:
            ilo, ihi = -hi, -lo
        sig = p <= alpha
        imp = sig & (ilo > 0)
        harm = sig & (ihi < 0)
        ready = (nc >= gate) & (nt >= gate)
        srm_ok = srm_p_value_arrays(exec_c[:, j], exec_t[:, j], policy.traffic_split) >= policy.srm_threshold
        has_data = (nc > 0) | (nt > 0)
        apply_ = imp & ((1.0 - p) >= policy.auto_apply_threshold)
        code = np.where(harm, REJECT, np.where(apply_, APPLY, CONTINUE))
        code = np.where(ready & has_data, code, CONTINUE)
        code = np.where(srm_ok, code, INVALID)
        if not policy.enable_ab_testing or not policy.auto_apply or policy.require_review:
            code = np.where(code == APPLY, CONTINUE, code)
            if not policy.enable_ab_testing:
                code = np.where(code == REJECT, CONTINUE, code)
        codes[:, j] = code
        pvals[:, j] = p
    return codes, pvals
