"""Always-valid non-inferiority: positive evidence that a guardrail is not worse than its margin.

A guardrail may get worse by at most its margin ``m`` (> 0, on the test's scale).  On the
*improvement* scale ``d`` (treatment minus control, signed so that positive = better) the
hypotheses are ``H0: d <= -m`` (worse than the margin) against ``H1: d > -m``.  Rejecting H0
is the evidence the decision rule demands before it applies a candidate; "no significant harm
yet" is not.

Test: a one-sided normal mixture
--------------------------------
Let ``D`` be the estimate of ``d`` with variance ``V`` (the plug-in ``s_c^2/n_c + s_t^2/n_t``
of :mod:`.sequential`), and ``S = (D - d0) / V``, ``I = 1 / V`` the score and information for
the null value ``d0``.  For every ``theta >= 0``, ``exp(theta S - theta^2 I / 2)`` is a
(super)martingale when ``d <= d0`` (Gaussian limit).  Mixing over ``theta`` with a half-normal
density ``2 phi(theta / tau) / tau`` on ``[0, inf)`` gives, in closed form with ``z = (D - d0) /
sqrt(V)`` and ``r = tau^2 / V``,

    Lambda+ = 2 / sqrt(1 + r) * exp(z^2 r / (2 (1 + r))) * Phi(z sqrt(r / (1 + r))),

still a nonnegative supermartingale under every ``d <= d0`` because the mixture puts no mass on
``theta < 0``.  Ville's inequality gives ``P(sup_t Lambda+_t >= 1/alpha) <= alpha``: the test
"reject H0 once ``Lambda+ >= 1/alpha``" keeps its level however often one looks, and
``Lambda+`` grows with ``z``, so the rejection region is ``z >= b(r)`` where ``b(r)`` solves
``Lambda+ = 1/alpha``.  Inverting over ``d0`` gives an always-valid *lower* confidence bound
``L_t = D_t - b(r_t) sqrt(V_t)``; its running maximum over looks is still valid, and
non-inferiority is shown once ``L_t > -m``.

Compared with the two-sided mixture of :mod:`.sequential` at level ``alpha`` (whose lower side
alone has level ``<= alpha`` as well), the one-sided mixture spends all of ``alpha`` on the
harmful side: ``Phi(.) -> 1`` for large ``z``, so ``b(r)`` is close to the two-sided boundary at
``2 alpha`` (2.8 instead of 3.1 standard errors at ``alpha = 0.05`` and ``r = 20``), without the
overlap of the two sides that makes "a two-sided CS at ``2 alpha``" only approximately
one-sided at ``alpha``.

Mixture scale: ``tau = m``
--------------------------
The mixture's spread is the margin itself (on the test's scale).  Then ``r = m^2 / V`` is the
square of the margin in standard errors, and the boundary is tightest (``r`` about 7 at
``alpha = 0.05``) just where non-inferiority of an unchanged metric becomes possible
(``m`` about 2.7 standard errors), whatever the metric's spread or margin.  Seeded simulations
(success 90 % with a 5-point margin, quality with sd 0.15 and margins 0.02 / 0.05; looks every
10 per arm from 30 to 1,000) show this choice as powerful as the best of ``tau`` = 0.1, 0.15,
0.2 pooled sd at every configuration, with the type-I error at the margin 1.3-2.6 % for
``alpha = 0.05``.  A margin of 0 falls back to ``tau_sd`` x the pooled sd (a margin of 0 asks
for evidence that the guardrail did not get worse at all).

Sample size
-----------
With ``tau = m`` and a guardrail that is truly unchanged, the expected ``z`` at ``n`` control
executions is ``x = e sqrt(n / c)`` (``e = m / sigma``, ``c = 1 + 1/kappa``) and ``r = x^2``, so
a look has power ``1 - beta`` once ``x >= b(x^2) + z_{1-beta}``: a constant ``x*`` per
``(alpha, beta)``, and ``n = c x*^2 / e^2``, like the fixed-horizon formula with ``x*`` in place
of ``z_{1-alpha} + z_{1-beta}``.  Like :func:`.power.sequential_sample_size` it is an upper
bound (the test may stop earlier).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import special

from .estimates import INF
from .fixed_horizon import normal_quantile

__all__ = [
    "one_sided_multiplier",
    "one_sided_multiplier_arrays",
    "noninferiority_bound",
    "noninferiority_sample_size",
    "one_sided_log_likelihood_ratio",
]

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _log_cdf(u: float) -> float:
    """``log Phi(u)`` for ``u >= 0`` (where ``Phi(u) >= 1/2``, so no cancellation)."""
    return math.log(0.5 * math.erfc(-u / _SQRT2))


def one_sided_log_likelihood_ratio(z: float, r: float) -> float:
    """``log Lambda+`` of the half-normal mixture (module doc) at ``z`` standard errors above the
    null value, with ``r = tau^2 / V``."""
    w = math.sqrt(r / (1.0 + r))
    u = z * w
    return (math.log(2.0) - 0.5 * math.log1p(r) + 0.5 * u * u
            + float(special.log_ndtr(u)))


def one_sided_multiplier(variance: float, tau2: float, alpha: float) -> float:
    """``b(r)``: how many standard errors above the null value the estimate must be for the
    half-normal mixture to reach ``1/alpha`` (``r = tau2 / variance``).

    Solves ``u^2/2 + log Phi(u) = -log(2 alpha) + log(1 + r)/2`` for ``u = b sqrt(r/(1+r))`` by
    Newton's method from ``u = sqrt(2 c)`` (the root without the ``Phi`` term, a lower bound;
    the left side is convex and increasing, so the iterates converge in 3-5 steps).
    """
    r = tau2 / variance
    c = 0.5 * math.log1p(r) - math.log(2.0 * alpha)
    u = math.sqrt(2.0 * c) if c > 0.0 else 0.0
    for _ in range(50):
        log_cdf = _log_cdf(u)
        g = 0.5 * u * u + log_cdf - c
        step = g / (u + math.exp(-0.5 * u * u - _LOG_SQRT_2PI - log_cdf))
        u -= step
        if abs(step) < 1e-12 * (1.0 + u):
            break
    return u * math.sqrt((1.0 + r) / r)


def one_sided_multiplier_arrays(variance: np.ndarray, tau2: np.ndarray, alpha: float) -> np.ndarray:
    """:func:`one_sided_multiplier` element-wise (regular inputs: ``variance > 0``, ``tau2 > 0``)."""
    r = np.asarray(tau2, dtype=float) / np.asarray(variance, dtype=float)
    c = 0.5 * np.log1p(r) - math.log(2.0 * alpha)
    u = np.sqrt(np.maximum(2.0 * c, 0.0))
    for _ in range(50):
        log_cdf = special.log_ndtr(u)
        g = 0.5 * u * u + log_cdf - c
        step = g / (u + np.exp(-0.5 * u * u - _LOG_SQRT_2PI - log_cdf))
        u = u - step
        if np.all(np.abs(step) < 1e-12 * (1.0 + u)):
            break
    return u * np.sqrt((1.0 + r) / r)


def noninferiority_bound(improvement: float, variance: float, tau2: float, alpha: float,
                         previous: float | None = None) -> float:
    """The always-valid lower bound of the improvement (positive = better) at this look:
    ``improvement - b(r) sqrt(variance)``, raised to ``previous`` (the bound carried from
    earlier looks) when that is higher.  ``-inf`` without a variance estimate."""
    if not 0.0 < variance < INF or tau2 <= 0.0:
        bound = -INF
    else:
        bound = improvement - one_sided_multiplier(variance, tau2, alpha) * math.sqrt(variance)
    if previous is not None and previous > bound:
        return previous
    return bound


@lru_cache(maxsize=4096)
def _expected_z_needed(alpha: float, power: float, margin_over_distance: float = 1.0) -> float:
    """``x*`` with ``x* = b(k^2 x*^2) + z_{power}`` (module doc; ``k`` = margin / distance of the
    true improvement above the null, 1 for an unchanged metric), by bisection."""
    z_beta = normal_quantile(power)
    k2 = margin_over_distance * margin_over_distance
    lo, hi = max(z_beta, 1e-3), 60.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid - one_sided_multiplier(1.0, k2 * mid * mid, alpha) - z_beta >= 0.0:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-12:
            break
    return hi


def noninferiority_sample_size(margin_sd: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0,
                               sequential: bool = True, distance_sd: float | None = None) -> float:
    """Control-arm size at which a look shows non-inferiority with probability ``power``.

    ``margin_sd``: the margin in units of the per-execution standard deviation; ``distance_sd``:
    how far the true improvement lies above ``-margin``, in the same units (default: the margin,
    i.e. an unchanged metric); ``ratio``: treatment / control size.  Sequential: the one-sided
    mixture with ``tau = margin`` (module doc), whose expected z at ``n`` is
    ``x = distance_sd sqrt(n / c)`` with ``r = (margin_sd / distance_sd)^2 x^2``; fixed horizon:
    the one-sided z test, ``(z_{1-alpha} + z_{power})^2 (1 + 1/ratio) / distance_sd^2``.
    """
    distance_sd = margin_sd if distance_sd is None else distance_sd
    if not margin_sd > 0 or not distance_sd > 0:
        raise ValueError(f"margin_sd and distance_sd must be > 0, got {margin_sd}, {distance_sd}")
    if not 0 < alpha < 1 or not 0 < power < 1 or not ratio > 0:
        raise ValueError("alpha and power must be in (0, 1) and ratio > 0")
    if sequential:
        x = _expected_z_needed(alpha, power, margin_sd / distance_sd)
    else:
        x = normal_quantile(1 - alpha) + normal_quantile(power)
    return x * x * (1.0 + 1.0 / ratio) / (distance_sd * distance_sd)
