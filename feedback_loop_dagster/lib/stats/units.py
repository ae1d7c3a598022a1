"""Effects as a person reads them: treatment minus control in the metric's own unit.

The one formatting module for every place that shows an effect (decision reasons, tables, the
CLI, lineage edges, plots), so that they all use one sign convention and one interval order:

* success rate, quality score, user rating (0-1 scales): **percentage points**, 1 decimal,
  ``-10.6 pts [-18.2, -3.0]``;
* latency: **relative change of the geometric mean in %**, 1 decimal, negative = faster, with
  the geometric means in ms beside it: ``-12.0% [-15.1%, -8.7%] (850 -> 748 ms)``;
* retries: absolute change per execution, ``+0.12 retries/exec [+0.05, +0.19]``.

The interval is always ``[low, high]`` with ``low <= high``.  Whether a change is good depends
on the metric (lower latency is better, lower success is worse); where a verdict is drawn the
text says so in words, "better" or "worse", via ``verdict=``.

Everything here works from a :class:`~.decision.MetricResult` or from its ``to_dict()`` form
(stored results are JSON, where infinite bounds are ``None``), and from plain numbers on the
test's scale (:func:`to_unit`, for margins and one-sided bounds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

from .estimates import relative_change_from_log
from .metrics import METRICS

__all__ = [
    "EffectInUnit",
    "UNITS",
    "effect_in_unit",
    "format_change",
    "format_effect",
    "format_in_unit",
    "format_margin",
    "geometric_means_text",
    "improvement_in_unit",
    "to_unit",
    "unit_of",
    "verdict_of",
    "verdict_word",
]

#: metric -> unit symbol of its effects.
UNITS: dict[str, str] = {
    "success": "pts",
    "quality": "pts",
    "rating": "pts",
    "latency": "%",
    "retries": "retries/exec",
}
_DECIMALS = {"pts": 1, "%": 1, "retries/exec": 2}
_OUTSIDE_INTERVAL = "this look's estimate; the interval is narrowed by earlier looks"


class EffectInUnit(NamedTuple):
    """An effect (treatment - control) and its interval in the metric's unit; ``low <= high``.

    ``value``/``low``/``high`` are ``None`` when unknown (no data); an unbounded side is
    ``-inf``/``+inf``.
    """

    value: float | None
    low: float | None
    high: float | None
    unit: str


def unit_of(metric: str) -> str:
    """The unit symbol of ``metric``'s effects (``pts``, ``%`` or ``retries/exec``)."""
    try:
        return UNITS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(UNITS)}") from None


def to_unit(metric: str, x: float | None) -> float | None:
    """A difference on the test's scale in the metric's unit.

    Test scales: difference of rates or of means; for latency the log ratio of geometric means,
    whose unit value is the relative change ``exp(x) - 1`` in %.  ``None`` stays ``None``,
    infinities keep their sign (a log ratio of ``-inf`` is -100 %).
    """
    unit = unit_of(metric)
    if x is None:
        return None
    if unit == "%":
        return relative_change_from_log(x) * 100.0
    if unit == "pts":
        return x * 100.0
    return float(x)


def _fields(result: Any) -> Callable[[str], Any]:
    """``name -> value`` of a result object or of its stored JSON (a mapping)."""
    if isinstance(result, Mapping):
        return result.get
    return lambda name: getattr(result, name, None)


def _bound(value: Any, missing: float) -> float:
    """A stored interval bound: ``None`` (JSON of +-inf) means unbounded on that side."""
    return missing if value is None else float(value)


def effect_in_unit(result: Any) -> EffectInUnit:
    """``(value, low, high, unit)`` of a metric result (``MetricResult`` or its ``to_dict()``).

    Success, quality, rating: the difference of means in points; latency: the relative change
    of the geometric mean in % (from the interval on the log scale, so the bounds are exact);
    retries: the difference of mean retries per execution.
    """
    field = _fields(result)
    metric = field("metric")
    unit = unit_of(metric)
    effect = field("effect")
    if effect is None or not (field("n_control") and field("n_treatment")):
        return EffectInUnit(None, None, None, unit)
    low = to_unit(metric, _bound(field("ci_lower"), -math.inf))
    high = to_unit(metric, _bound(field("ci_upper"), math.inf))
    value = to_unit(metric, float(effect))
    if low > high:  # defensive: the engine's intervals are ordered already
        low, high = high, low
    return EffectInUnit(value, low, high, unit)


def verdict_word(metric: str, value: float) -> str:
    """``better`` or ``worse`` for a change of ``value`` in ``metric``'s unit (0: ``unchanged``)."""
    if value == 0:
        return "unchanged"
    return "better" if value * METRICS[metric].direction > 0 else "worse"


def verdict_of(result: Any) -> str | None:
    """``better``/``worse`` when the result is significant in that direction, else ``None``."""
    field = _fields(result)
    if field("significant_improvement"):
        return "better"
    if field("significant_harm"):
        return "worse"
    return None


def _number(x: float, unit: str, sign: bool = True) -> str:
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    digits = _DECIMALS[unit]
    text = f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"
    # "-0.0" reads as a change; a rounded zero is written without a sign
    if float(text) == 0.0:
        text = f"{0.0:.{digits}f}"
    return text


def format_in_unit(metric: str, value: float | None, sign: bool = True) -> str:
    """One value already in ``metric``'s unit, with its unit: ``-5.0 pts``, ``+12.0%``, ``+0.12 retries/exec``."""
    unit = unit_of(metric)
    if value is None:
        return "n/a"
    text = _number(value, unit, sign)
    return f"{text}%" if unit == "%" else f"{text} {unit}"


def _interval(metric: str, low: float, high: float) -> str:
    unit = unit_of(metric)
    suffix = "%" if unit == "%" else ""
    return f"[{_number(low, unit)}{suffix}, {_number(high, unit)}{suffix}]"


def geometric_means_text(result: Any) -> str:
    """``850 -> 748 ms``: the control and treatment geometric means of a latency result."""
    field = _fields(result)
    return f"{_ms(field('mean_control'))} -> {_ms(field('mean_treatment'))} ms"


def _ms(x: Any) -> str:
    if x is None:
        return "?"
    x = float(x)
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.3g}"


def format_change(metric: str, value: float, low: float, high: float) -> str:
    """A change and its interval, all in ``metric``'s unit: ``+4.2 pts [+1.0, +7.4]`` (bounds
    put in order)."""
    low, high = min(low, high), max(low, high)
    return f"{format_in_unit(metric, value)} {_interval(metric, low, high)}"


def improvement_in_unit(metric: str, x: float | None) -> float | None:
    """A change on the improvement scale (positive = better: a difference of rates or means, for
    latency the fraction faster) as an effect in ``metric``'s unit, treatment - control: a 12%
    faster latency is ``-12.0`` (%), 0.05 fewer retries ``-0.05`` retries/exec."""
    if x is None:
        return None
    if unit_of(metric) == "%":
        return -x * 100.0
    return to_unit(metric, METRICS[metric].direction * x)


def format_effect(result: Any, *, label: bool = False, verdict: str | None = None) -> str:
    """The effect of a metric result as a person reads it.

    ``-10.6 pts [-18.2, -3.0]``; ``-12.0% [-15.1%, -8.7%] (850 -> 748 ms)``;
    ``+0.12 retries/exec [+0.05, +0.19]``.  ``label=True`` puts the metric's name first
    (``success rate -10.6 pts [...]``); ``verdict`` (``"better"``/``"worse"``, e.g. from
    :func:`verdict_of`) is appended in words: ``..., worse``.  An estimate outside its interval
    (the running intersection of every look's) is marked as this look's.
    """
    metric = _fields(result)("metric")
    value, low, high, _unit = effect_in_unit(result)
    name = f"{METRICS[metric].label} " if label else ""
    if value is None:
        return f"{METRICS[metric].label}: no data" if label else "no data"
    text = f"{name}{format_change(metric, value, low, high)}"
    if metric == "latency":
        text += f" ({geometric_means_text(result)})"
    if not low <= value <= high:
        # An always-valid interval is the intersection of every look's; this look's estimate
        # can fall outside it, which reads as a contradiction unless it is said.
        text += f" ({_OUTSIDE_INTERVAL})"
    if verdict:
        text += f", {verdict}"
    return text


def format_margin(metric: str, margin: float) -> str:
    """A non-inferiority margin (policy units: absolute for rates and scores and retries,
    relative for latency) as the harm it allows, in the metric's unit: ``-5.0 pts``, ``+5.0%``,
    ``+0.50 retries/exec``."""
    spec = METRICS[metric]
    on_scale = spec.margin_on_test_scale(margin)
    return format_in_unit(metric, to_unit(metric, -spec.direction * on_scale))
