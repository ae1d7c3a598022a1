"""Sample size: how many executions per arm a policy's minimum detectable effect needs.

Both functions take a *standardised* effect ``e = effect / sigma`` (effect on
the test's scale divided by the per-execution standard deviation) and the
treatment/control size ratio ``kappa = n_t / n_c``, and return the control
arm's size ``n_c`` (the treatment arm needs ``kappa * n_c``).

* Fixed horizon (two-sided level ``alpha``, power ``1 - beta``), the normal
  approximation ``n_c = (z_{1-alpha/2} + z_{1-beta})^2 (1 + 1/kappa) / e^2``.
  It equals ``statsmodels.stats.power.NormalIndPower().solve_power`` with
  ``alternative="larger"`` at ``alpha/2`` (the two-sided call adds the
  negligible probability of significance in the wrong direction); the tests
  check both.  A closed form because statsmodels solves it by root finding,
  ~1 ms per call, and the engine computes it at every decision.
* Sequential (the mSPRT of :mod:`.sequential`): no closed form exists; a
  look at ``n`` has power ``1 - beta`` once the expected z statistic reaches
  the boundary plus ``z_{1-beta}``:
  ``e sqrt(n_c / (1 + 1/kappa)) >= b(r) + z_{1-beta}`` with
  ``b(r) = sqrt((1 + r)/r (log(1 + r) - 2 log alpha))`` and
  ``r = tau^2 / V = tau_sd^2 n_c / (1 + 1/kappa)`` (for ``tau = tau_sd * sigma``).
  Solved by Newton's method (``b`` grows like ``sqrt(log n)``).  Since
  the test may also stop at earlier looks, this is an upper bound on the
  sample needed for that power (the seeded simulation in the tests confirms
  the power is at least ``1 - beta`` there).
"""

from __future__ import annotations

import math

from .fixed_horizon import normal_quantile
from .sequential import DEFAULT_TAU_SD

__all__ = ["fixed_horizon_sample_size", "sequential_sample_size", "minimum_detectable_effect_on_test_scale"]


def _check(effect_size: float, alpha: float, power: float, ratio: float) -> None:
    if not effect_size > 0:
        raise ValueError(f"effect_size must be > 0, got {effect_size}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    if not ratio > 0:
        raise ValueError(f"ratio must be > 0, got {ratio}")


def fixed_horizon_sample_size(effect_size: float, alpha: float = 0.05, power: float = 0.8,
                              ratio: float = 1.0) -> float:
    """Control-arm size of a two-sided fixed-horizon z/Welch test (see module doc)."""
    _check(effect_size, alpha, power, ratio)
    z = normal_quantile(1.0 - alpha / 2.0) + normal_quantile(power)
    return z * z * (1.0 + 1.0 / ratio) / (effect_size * effect_size)


def sequential_sample_size(effect_size: float, alpha: float = 0.05, power: float = 0.8,
                           ratio: float = 1.0, tau_sd: float = DEFAULT_TAU_SD) -> float:
    """Control-arm size at which a look of the mSPRT has the given power (see module doc)."""
    _check(effect_size, alpha, power, ratio)
    if not tau_sd > 0:
        raise ValueError(f"tau_sd must be > 0, got {tau_sd}")
    return _sequential_n(effect_size, alpha, power, ratio, tau_sd)


def _sequential_n(effect_size: float, alpha: float, power: float, ratio: float, tau_sd: float) -> float:
    # Newton's method on G(n) = c (b(r(n)) + z_beta)^2 / e^2 - n, where
    # b(r)^2 = (1 + r)/r * L, L = log(1 + r) - 2 log(alpha), r = tau_sd^2 n / c,
    # and d(b^2)/dr = (r - L)/r^2.  Starts at twice the fixed-horizon size;
    # converges in 2-6 steps.  Unchecked: the engine's hot path.
    c = 1.0 + 1.0 / ratio
    zb = normal_quantile(power)
    la = -2.0 * math.log(alpha)
    k2c = tau_sd * tau_sd / c
    e2 = effect_size * effect_size
    z = normal_quantile(1.0 - alpha / 2.0) + zb
    n = 2.0 * z * z * c / e2
    for _ in range(60):
        r = k2c * n
        L = math.log1p(r) + la
        b = math.sqrt((1.0 + r) / r * L)
        bz = b + zb
        g = c * bz * bz / e2 - n
        dg = c * bz * (r - L) / (r * r * b) * k2c / e2 - 1.0
        new = n - g / dg
        if new <= 0.0:
            new = 0.5 * n
        if abs(new - n) <= 1e-10 * n or abs(new - n) < 1e-3:
            return new
        n = new
    return n


def minimum_detectable_effect_on_test_scale(kind: str, relative_mde: float, control_mean: float) -> float | None:
    """The policy's relative MDE as an absolute effect on the test's scale.

    ``proportion``/``mean``: ``relative_mde * |control mean|`` (``None`` when
    the control mean is 0, e.g. retries); ``logmean`` (latency): a change of
    the geometric mean by ``relative_mde``, i.e. ``log(1 + relative_mde)``.
    """
    if kind == "logmean":
        return math.log1p(relative_mde)
    value = relative_mde * abs(control_mean)
    return value if value > 0 else None
