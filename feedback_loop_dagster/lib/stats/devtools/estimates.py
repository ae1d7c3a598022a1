"""Each two-sample test on its own, as an :class:`EffectEstimate`: for the tests that hold the
engine's cores to scipy and statsmodels, and for the benchmark's legacy rule.

The engine itself calls the ``*_core`` functions and reports a :class:`..decision.MetricResult`;
these wrappers add the means and the relative effect the same way, for one test at a time
(any alternative, any mixture ``tau``). The pooled-variance Student t test is the test of the
original design, kept only as the benchmark's "legacy rule" reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..estimates import INF, CoreResult, json_safe, normalise_alternative, relative_effect
from ..fixed_horizon import _degenerate_core, _t_core, two_proportion_z_core, welch_core
from ..sequential import DEFAULT_TAU_SD, METHOD, default_tau2, msprt_core
from ..sufficient import LogMeanStats, MeanStats, ProportionStats, moments


@dataclass(frozen=True, slots=True)
class EffectEstimate:
    """Effect of treatment over control with its uncertainty.

    ``effect`` is ``treatment - control`` on the test's scale (log scale for
    latency); ``relative`` is ``treatment / control - 1`` of the arithmetic
    means (for latency: of the geometric means, i.e. ``exp(effect) - 1``).
    ``ci_lower``/``ci_upper`` bound ``effect`` at level ``1 - alpha`` (an
    always-valid confidence sequence for the sequential test); one-sided tests
    have one infinite bound.  ``relative`` is ``None`` when the control mean is
    0 (no relative change is defined).
    """

    method: str
    alternative: str
    alpha: float
    n_control: int
    n_treatment: int
    mean_control: float
    mean_treatment: float
    effect: float
    se: float
    statistic: float
    p_value: float
    ci_lower: float
    ci_upper: float
    relative: float | None
    relative_ci_lower: float | None
    relative_ci_upper: float | None
    df: float | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def student_core(n_c: int, mean_c: float, var_c: float, n_t: int, mean_t: float, var_t: float,
                 alpha: float = 0.05, alternative: str = "two-sided") -> CoreResult:
    """Pooled-variance Student t test on ``(n, mean, sample variance)``."""
    if n_c < 2 or n_t < 2:
        return _degenerate_core(mean_c, mean_t, INF, alternative,
                                "fewer than 2 observations in an arm: no variance estimate")
    df = float(n_c + n_t - 2)
    sp2 = ((n_c - 1) * var_c + (n_t - 1) * var_t) / df
    se2 = sp2 * (1.0 / n_c + 1.0 / n_t)
    if se2 <= 0.0:
        return _degenerate_core(mean_c, mean_t, 0.0, alternative, "zero variance in both arms", df=df)
    return _t_core(mean_c, mean_t, math.sqrt(se2), df, alpha, alternative)


def _estimate(method: str, alternative: str, alpha: float, c, t, core_of: Callable[..., CoreResult]) -> EffectEstimate:
    """The estimate of `core_of(n_c, mean_c, var_c, n_t, mean_t, var_t)`, the arms' moments taken once."""
    n_c, mean_c, var_c = moments(c)
    n_t, mean_t, var_t = moments(t)
    core = core_of(n_c, mean_c, var_c, n_t, mean_t, var_t)
    rel, rlo, rhi = relative_effect(mean_c, mean_t, var_c, var_t, n_c, n_t, core.mult_lower, core.mult_upper,
                                    log_scale=isinstance(c, LogMeanStats), ci_lower=core.ci_lower,
                                    ci_upper=core.ci_upper)
    return EffectEstimate(
        method=method, alternative=alternative, alpha=alpha, n_control=n_c, n_treatment=n_t,
        mean_control=mean_c, mean_treatment=mean_t, effect=core.effect, se=core.se, statistic=core.statistic,
        p_value=core.p_value, ci_lower=core.ci_lower, ci_upper=core.ci_upper, relative=rel, relative_ci_lower=rlo,
        relative_ci_upper=rhi, df=core.df, note=core.note,
    )


def welch_t_test(control: MeanStats, treatment: MeanStats, alpha: float = 0.05,
                 alternative: str = "two-sided") -> EffectEstimate:
    """Welch's t test of ``mean(treatment) - mean(control)``.

    ``alternative``: ``"two-sided"``, ``"greater"`` (treatment mean larger) or
    ``"less"``.  Standard error ``sqrt(s_c^2/n_c + s_t^2/n_t)``,
    Welch-Satterthwaite degrees of freedom.  For :class:`LogMeanStats`, the
    relative effect is the ratio of geometric means minus 1.  Degenerate
    inputs: an arm with n < 2 gives p = 1 and an unbounded interval; zero
    variance in both arms gives p = 1 (equal means) or 0 and a point interval.
    """
    alternative = normalise_alternative(alternative)
    return _estimate("welch_t", alternative, alpha, control, treatment, lambda *m: welch_core(*m, alpha, alternative))


def student_t_test(control: MeanStats, treatment: MeanStats, alpha: float = 0.05,
                   alternative: str = "two-sided") -> EffectEstimate:
    """Pooled-variance Student t test (``scipy.stats.ttest_ind(..., equal_var=True)``).

    The test of the original design; a reference for the benchmark, not used
    by the decision rule.
    """
    alternative = normalise_alternative(alternative)
    return _estimate("student_t", alternative, alpha, control, treatment, lambda *m: student_core(*m, alpha, alternative))


def two_proportion_z_test(control: ProportionStats, treatment: ProportionStats, alpha: float = 0.05,
                          alternative: str = "two-sided") -> EffectEstimate:
    """Two-proportion z test of ``p_treatment - p_control``.

    The statistic uses the pooled rate under H0 (statsmodels'
    ``proportions_ztest`` default); ``se`` and the interval use the unpooled
    (Wald) variance ``p_c(1-p_c)/n_c + p_t(1-p_t)/n_t``, which does not assume
    H0.  Degenerate inputs (an arm with fewer than 2 trials; every trial a
    success, or every one a failure, in both arms) give a defined result.
    """
    alternative = normalise_alternative(alternative)
    return _estimate("two_proportion_z", alternative, alpha, control, treatment, lambda *_: two_proportion_z_core(
        control.n, control.successes, treatment.n, treatment.successes, alpha, alternative))


def _msprt_estimate(c, t, alpha: float, tau: float | None, tau_sd: float, previous_p, previous_ci) -> EffectEstimate:
    if tau is not None and not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")

    def core_of(n_c, mean_c, var_c, n_t, mean_t, var_t) -> CoreResult:
        tau2 = tau * tau if tau is not None else default_tau2(var_c, var_t, tau_sd)
        return msprt_core(n_c, mean_c, var_c, n_t, mean_t, var_t, alpha, tau2, previous_p, previous_ci)

    return _estimate(METHOD, "two-sided", alpha, c, t, core_of)


def msprt_mean_test(
    control: MeanStats,
    treatment: MeanStats,
    alpha: float = 0.05,
    tau: float | None = None,
    tau_sd: float = DEFAULT_TAU_SD,
    previous_p: float | None = None,
    previous_ci: tuple[float, float] | None = None,
) -> EffectEstimate:
    """Always-valid test of ``mean(treatment) - mean(control)`` (log-means for :class:`LogMeanStats`).

    ``tau``: mixture standard deviation in the metric's units (on the log
    scale for latency); default ``tau_sd`` x pooled standard deviation.
    ``previous_p``/``previous_ci``: the values returned at the previous look
    of the same experiment, to keep p monotone and intersect the sequence.
    """
    return _msprt_estimate(control, treatment, alpha, tau, tau_sd, previous_p, previous_ci)


def msprt_proportion_test(
    control: ProportionStats,
    treatment: ProportionStats,
    alpha: float = 0.05,
    tau: float | None = None,
    tau_sd: float = DEFAULT_TAU_SD,
    previous_p: float | None = None,
    previous_ci: tuple[float, float] | None = None,
) -> EffectEstimate:
    """Always-valid test of ``p_treatment - p_control`` with the plug-in (unpooled)
    variance ``p_c(1-p_c)/n_c + p_t(1-p_t)/n_t``; see :func:`msprt_mean_test`."""
    return _msprt_estimate(control, treatment, alpha, tau, tau_sd, previous_p, previous_ci)
