"""Fixed-horizon tests on sufficient statistics (valid for ONE look at a planned n).

* :func:`welch_core` -- Welch's unequal-variance t test; equals
  ``scipy.stats.ttest_ind(treatment, control, equal_var=False, alternative=...)``
  including its ``confidence_interval``.
* :func:`two_proportion_z_core` -- two-proportion z test with the pooled
  variance under H0; equals
  ``statsmodels.stats.proportion.proportions_ztest([x_t, x_c], [n_t, n_c])``.
  Its interval is the unpooled Wald interval (as
  ``statsmodels...confint_proportions_2indep(method="wald")``).
* :func:`wilson_interval` -- Wilson score interval of one proportion; equals
  ``statsmodels.stats.proportion.proportion_confint(method="wilson")``.

The pooled-variance Student t test of the original design, kept as the "legacy
rule" reference for the benchmark, lives with the simulation code in
:mod:`.devtools.estimates`.

Re-running any of these after every new execution inflates the false-positive
rate far above ``alpha`` (that is the bug this package fixes): they are
labelled ``fixed_horizon`` and the decision rule only uses them at the planned
sample size.  Distribution functions are ``scipy.special`` ufuncs and
``math.erfc`` (fast per call); the test suite checks the results against
scipy.stats / statsmodels to 1e-9.  ``scipy.special`` is imported on first use:
importing it costs ~0.4 s (scipy's array-API layer loads numpy.f2py and
numpy.testing), which every process importing this package would otherwise
pay, the CLI's registry commands and the code location's load included.

The ``*_core`` functions work on plain numbers ``(n, mean, variance)`` and
return a :class:`.CoreResult`; they are the hot path of :func:`.evaluate_experiment`.
"""

from __future__ import annotations

import math
from functools import lru_cache

from .estimates import INF, CoreResult

__all__ = [
    "welch_core",
    "two_proportion_z_core",
    "normal_sf",
    "normal_quantile",
    "t_quantile",
    "wilson_interval",
]

_SQRT2 = math.sqrt(2.0)


def normal_sf(z: float) -> float:
    """Upper tail of the standard normal, ``1 - Phi(z)``, accurate in both tails."""
    return 0.5 * math.erfc(z / _SQRT2)


@lru_cache(maxsize=256)
def normal_quantile(q: float) -> float:
    """``Phi^{-1}(q)`` (``scipy.special.ndtri``), cached: policies reuse a few levels."""
    from scipy import special  # on first use: see the module's docstring

    return float(special.ndtri(q))


def wilson_interval(count: int, total: int, alpha: float = 0.05) -> tuple[float, float]:
    """Two-sided ``1 - alpha`` Wilson score interval of the proportion ``count / total`` (``total > 0``).

    The closed form statsmodels computes, clipped to [0, 1]; unlike the Wald interval it is not a
    single point at 0 or ``total`` successes."""
    share = count / total
    z = normal_quantile(1.0 - alpha / 2.0)
    z2_n = z * z / total
    denominator = 1.0 + z2_n
    center = (share + z2_n / 2.0) / denominator
    half_width = z * math.sqrt(share * (1.0 - share) / total + z2_n / (4.0 * total)) / denominator
    # The bounds are exactly 0 at no successes and 1 at all of them; the subtraction would leave rounding there.
    low = 0.0 if count == 0 else max(center - half_width, 0.0)
    high = 1.0 if count == total else min(center + half_width, 1.0)
    return low, high


def t_quantile(q: float, df: float) -> float:
    """Student t quantile (``scipy.special.stdtrit``)."""
    from scipy import special  # on first use: see the module's docstring

    return float(special.stdtrit(df, q))


def _t_sf(t: float, df: float) -> float:
    from scipy import special  # on first use: see the module's docstring

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
