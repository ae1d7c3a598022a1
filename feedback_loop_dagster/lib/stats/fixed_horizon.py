"""Fixed-horizon tests on sufficient statistics (valid for ONE look at a planned n).

* :func:`welch_t_test` -- Welch's unequal-variance t test; equals
  ``scipy.stats.ttest_ind(treatment, control, equal_var=False, alternative=...)``
  including its ``confidence_interval``.
* :func:`two_proportion_z_test` -- two-proportion z test with the pooled
  variance under H0; equals
  ``statsmodels.stats.proportion.proportions_ztest([x_t, x_c], [n_t, n_c])``.
  Its interval is the unpooled Wald interval (as
  ``statsmodels...confint_proportions_2indep(method="wald")``).
* :func:`student_t_test` -- the pooled-variance Student t test of the
  original design, kept as the "legacy rule" reference for the benchmark.

Re-running any of these after every new execution inflates the false-positive
rate far above ``alpha`` (that is the bug this package fixes): they are
labelled ``fixed_horizon`` and the decision rule only uses them at the planned
sample size.  Distribution functions are ``scipy.special`` ufuncs and
``math.erfc`` (fast per call); the test suite checks the results against
scipy.stats / statsmodels to 1e-9.

The ``*_core`` functions work on plain numbers ``(n, mean, variance)`` and
return a :class:`.CoreResult`; they are the hot path of :func:`.evaluate_experiment`.
"""

from __future__ import annotations

import math
from functools import lru_cache

from scipy import special

from .estimates import INF, CoreResult, EffectEstimate, normalise_alternative, relative_effect
from .sufficient import LogMeanStats, MeanStats, ProportionStats, moments

__all__ = [
    "welch_t_test",
    "student_t_test",
    "two_proportion_z_test",
    "welch_core",
    "student_core",
    "two_proportion_z_core",
    "normal_sf",
    "normal_quantile",
    "t_quantile",
]

_SQRT2 = math.sqrt(2.0)


def normal_sf(z: float) -> float:
    """Upper tail of the standard normal, ``1 - Phi(z)``, accurate in both tails."""
    return 0.5 * math.erfc(z / _SQRT2)


@lru_cache(maxsize=256)
def normal_quantile(q: float) -> float:
    """``Phi^{-1}(q)`` (``scipy.special.ndtri``), cached: policies reuse a few levels."""
    return float(special.ndtri(q))


def t_quantile(q: float, df: float) -> float:
    """Student t quantile (``scipy.special.stdtrit``)."""
    return float(special.stdtrit(df, q))


def _t_sf(t: float, df: float) -> float:
    # stdtr(df, x) is the Student t CDF; sf(t) = cdf(-t).
    return float(special.stdtr(df, -t))


def _p_value(stat: float, alternative: str, sf, *args) -> float:
    if alternative == "two-sided":
        p = 2.0 * sf(-stat if stat < 0 else stat, *args)
    elif alternative == "greater":
        p = sf(stat, *args)
    else:
        p = sf(-stat, *args)
    return 1.0 if p > 1.0 else (0.0 if p < 0.0 else p)


def _multipliers(alternative: str, quantile, alpha: float, *args) -> tuple[float, float]:
    if alternative == "two-sided":
        q = quantile(1.0 - alpha / 2.0, *args)
        return q, q
    q = quantile(1.0 - alpha, *args)
    return (q, INF) if alternative == "greater" else (INF, q)


def _degenerate_core(mean_c: float, mean_t: float, se: float, alternative: str, note: str,
                     df: float | None = None) -> CoreResult:
    """Defined result when the standard error is 0 or undefined (never NaN).

    * ``se`` infinite (an arm with n < 2): nothing can be concluded: p = 1 and
      an unbounded interval.
    * ``se == 0`` (no spread in either arm): the difference is known exactly:
      p = 1 if the means are equal, else 0 in the observed direction (1 for
      the opposite one-sided alternative); the interval is the point.
    """
    effect = mean_t - mean_c
    if math.isinf(se):
        return CoreResult(effect=effect, se=INF, statistic=0.0, p_value=1.0, ci_lower=-INF, ci_upper=INF,
                          mult_lower=INF, mult_upper=INF, df=df, note=note)
    if math.isclose(mean_t, mean_c, rel_tol=1e-9, abs_tol=1e-12):
        effect, p, stat = 0.0, 1.0, 0.0
    else:
        stat = math.copysign(INF, effect)
        if alternative == "two-sided":
            p = 0.0
        elif alternative == "greater":
            p = 0.0 if effect > 0 else 1.0
        else:
            p = 0.0 if effect < 0 else 1.0
    ml = INF if alternative == "less" else 0.0
    mu = INF if alternative == "greater" else 0.0
    lo = -INF if ml == INF else effect
    hi = INF if mu == INF else effect
    return CoreResult(effect=effect, se=0.0, statistic=stat, p_value=p, ci_lower=lo, ci_upper=hi,
                      mult_lower=ml, mult_upper=mu, df=df, note=note)


def _t_core(mean_c: float, mean_t: float, se: float, df: float, alpha: float, alternative: str) -> CoreResult:
    effect = mean_t - mean_c
    stat = effect / se
    p = _p_value(stat, alternative, _t_sf, df)
    ml, mu = _multipliers(alternative, t_quantile, alpha, df)
    lo = effect - ml * se if ml < INF else -INF
    hi = effect + mu * se if mu < INF else INF
    return CoreResult(effect=effect, se=se, statistic=stat, p_value=p, ci_lower=lo, ci_upper=hi,
                      mult_lower=ml, mult_upper=mu, df=df)


def welch_core(n_c: int, mean_c: float, var_c: float, n_t: int, mean_t: float, var_t: float,
               alpha: float = 0.05, alternative: str = "two-sided") -> CoreResult:
    """Welch t test on ``(n, mean, sample variance)`` of each arm."""
    if n_c < 2 or n_t < 2:
        return _degenerate_core(mean_c, mean_t, INF, alternative,
                                "fewer than 2 observations in an arm: no variance estimate")
    a, b = var_c / n_c, var_t / n_t
    se2 = a + b
    if se2 <= 0.0:
        return _degenerate_core(mean_c, mean_t, 0.0, alternative, "zero variance in both arms",
                                df=float(n_c + n_t - 2))
    # Welch-Satterthwaite degrees of freedom, computed on a/s and b/s (s = max) so that tiny
    # variances do not underflow the squares to 0; the ratio is unchanged by the scaling.
    scale = max(a, b)
    ra, rb = a / scale, b / scale
    df = (ra + rb) ** 2 / (ra * ra / (n_c - 1) + rb * rb / (n_t - 1))
    return _t_core(mean_c, mean_t, math.sqrt(se2), df, alpha, alternative)


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


def two_proportion_z_core(n_c: int, x_c: int, n_t: int, x_t: int, alpha: float = 0.05,
                          alternative: str = "two-sided") -> CoreResult:
    """Two-proportion z test on counts: pooled variance for the statistic,
    unpooled (Wald) variance for ``se`` and the interval."""
    pc = x_c / n_c if n_c else 0.0
    pt = x_t / n_t if n_t else 0.0
    if n_c < 2 or n_t < 2:
        return _degenerate_core(pc, pt, INF, alternative, "fewer than 2 trials in an arm")
    pooled = (x_c + x_t) / (n_c + n_t)
    se0 = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_c + 1.0 / n_t))
    if se0 == 0.0:
        # every trial in both arms has the same outcome: the effect is exactly 0
        return _degenerate_core(pc, pt, 0.0, alternative, "all trials in both arms have the same outcome")
    se = math.sqrt(pc * (1.0 - pc) / n_c + pt * (1.0 - pt) / n_t)
    effect = pt - pc
    stat = effect / se0
    p = _p_value(stat, alternative, normal_sf)
    ml, mu = _multipliers(alternative, normal_quantile, alpha)
    lo = effect - ml * se if ml < INF else -INF
    hi = effect + mu * se if mu < INF else INF
    return CoreResult(effect=effect, se=se, statistic=stat, p_value=p, ci_lower=lo, ci_upper=hi,
                      mult_lower=ml, mult_upper=mu)


def _estimate(method: str, alternative: str, alpha: float, c, t, core: CoreResult) -> EffectEstimate:
    n_c, mean_c, var_c = moments(c)
    n_t, mean_t, var_t = moments(t)
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
    n_c, m_c, v_c = moments(control)
    n_t, m_t, v_t = moments(treatment)
    core = welch_core(n_c, m_c, v_c, n_t, m_t, v_t, alpha, alternative)
    return _estimate("welch_t", alternative, alpha, control, treatment, core)


def student_t_test(control: MeanStats, treatment: MeanStats, alpha: float = 0.05,
                   alternative: str = "two-sided") -> EffectEstimate:
    """Pooled-variance Student t test (``scipy.stats.ttest_ind(..., equal_var=True)``).

    The test of the original design; a reference for the benchmark, not used
    by the decision rule.
    """
    alternative = normalise_alternative(alternative)
    n_c, m_c, v_c = moments(control)
    n_t, m_t, v_t = moments(treatment)
    core = student_core(n_c, m_c, v_c, n_t, m_t, v_t, alpha, alternative)
    return _estimate("student_t", alternative, alpha, control, treatment, core)


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
    core = two_proportion_z_core(control.n, control.successes, treatment.n, treatment.successes,
                                 alpha, alternative)
    return _estimate("two_proportion_z", alternative, alpha, control, treatment, core)
