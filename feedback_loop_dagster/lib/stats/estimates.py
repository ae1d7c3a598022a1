"""The common result of every two-sample test's core, and the relative effect.

All tests compare ``treatment - control`` on the scale of their statistic
(difference of rates, of means, or of log-means for latency) and return a
:class:`CoreResult`, from which the decision rule builds its one result type,
:class:`.decision.MetricResult`.  Non-finite numbers (an infinite bound of a
one-sided interval, the standard error of an arm with fewer than two
observations) are legitimate values here; :func:`json_safe` turns them into
``None`` for JSON.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

__all__ = ["CoreResult", "relative_effect", "json_safe", "ALTERNATIVES", "normalise_alternative"]

INF = math.inf

ALTERNATIVES = ("two-sided", "greater", "less")
_ALIASES = {"two-sided": "two-sided", "two_sided": "two-sided", "greater": "greater", "larger": "greater",
            "less": "less", "smaller": "less"}


def normalise_alternative(alternative: str) -> str:
    try:
        return _ALIASES[alternative]
    except KeyError:
        raise ValueError(
            f"alternative must be one of {ALTERNATIVES} (or statsmodels' 'larger'/'smaller'), got {alternative!r}"
        ) from None


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by ``None``, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):  # numpy scalars -> Python numbers
        return json_safe(value.item())
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class CoreResult(NamedTuple):
    """What a test computes from plain numbers (the engine's hot path); built by keyword.

    ``effect`` = treatment - control on the test's scale, ``se`` its standard error,
    ``statistic`` = effect / se (z or t), ``p_value``, the interval ``[ci_lower, ci_upper]``
    and its half-widths in units of ``se`` (``mult_lower``/``mult_upper``: quantiles, or the
    mixture boundary of the sequential test; ``inf`` for the open side of a one-sided test),
    the degrees of freedom of a t test and a note on degenerate inputs.
    """

    effect: float
    se: float
    statistic: float
    p_value: float
    ci_lower: float
    ci_upper: float
    mult_lower: float
    mult_upper: float
    df: float | None = None
    note: str | None = None


def _bound(center: float, mult: float, se: float, sign: float) -> float:
    if math.isinf(mult):
        return sign * INF
    if math.isinf(se):
        return sign * INF if se > 0 else center
    return center + sign * mult * se


def relative_change_from_log(log_ratio: float) -> float:
    """``exp(log_ratio) - 1``, saturating at +inf: accepted rows may hold durations whose logs are
    hundreds apart (a sub-picosecond run beside a slow one), and the engine must not raise on them."""
    if log_ratio > 709.0:  # exp overflows a double beyond ~709.78
        return INF
    return math.expm1(log_ratio) if log_ratio > -INF else -1.0


def relative_effect(
    mean_c: float,
    mean_t: float,
    var_c: float,
    var_t: float,
    n_c: int,
    n_t: int,
    mult_lower: float,
    mult_upper: float,
    log_scale: bool = False,
    ci_lower: float = -INF,
    ci_upper: float = INF,
) -> tuple[float | None, float | None, float | None]:
    """Relative effect ``treatment / control - 1`` with its interval.

    * ``log_scale=True`` (latency): the means are means of logs, so the ratio
      of geometric means is ``exp(effect)`` and its interval is the exact
      transform ``exp(ci) - 1`` of the interval on the log scale.
    * otherwise the delta method for a ratio of independent means
      (Deng, Knoblich, Lu, "Applying the Delta Method in Metric Analytics",
      KDD 2018, Section 3; also Kohavi, Tang, Xu, "Trustworthy Online
      Controlled Experiments", 2020, ch. 18):
      ``Var(m_t / m_c) ~= var_t / (n_t m_c^2) + m_t^2 var_c / (n_c m_c^4)``,
      and the interval is ``rel -/+ mult * se_rel`` with the multipliers of
      the absolute interval (normal/t quantile, or the mixture boundary).
    """
    if log_scale:
        if n_c < 1 or n_t < 1:
            return None, None, None  # an empty arm's log-mean is a placeholder, not a geometric mean
        return relative_change_from_log(mean_t - mean_c), relative_change_from_log(ci_lower), relative_change_from_log(ci_upper)
    if mean_c == 0.0 or n_c < 1 or n_t < 1:
        return None, None, None
    ratio = mean_t / mean_c
    if not math.isfinite(ratio):
        return None, None, None
    rel = ratio - 1.0
    if n_c < 2 or n_t < 2:
        return rel, -INF, INF
    # divided twice by mean_c rather than by mean_c^2, which may underflow
    var_rel = (var_t / n_t + ratio * ratio * var_c / n_c) / mean_c / mean_c
    se_rel = math.sqrt(var_rel)
    return rel, _bound(rel, mult_lower, se_rel, -1.0), _bound(rel, mult_upper, se_rel, +1.0)
