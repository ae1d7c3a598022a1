"""Metric policy: what each metric is, which way is better, which is primary.

=========  ==================  =====================  ==========  =====================
metric     statistic           scale of the test      better      default guardrail margin
=========  ==================  =====================  ==========  =====================
success    proportion          difference of rates    higher      5 percentage points
latency    mean of log(ms)     log ratio of geo-means lower       10 % (ratio <= 1.10)
quality    mean                difference of means    higher      0.05 (score in [0, 1])
rating     mean                difference of means    higher      0.05 (rating in [0, 1])
retries    mean                difference of means    lower       0.25 retries/execution
=========  ==================  =====================  ==========  =====================

User ratings are normalised to [0, 1] by the source contract, so they get the
same margin as the quality score.  Retries are counts whose control mean is
often 0, so their margin is absolute (a relative margin of 0 is unusable):
the candidate may not add more than one retry per four executions.  Why these
values: docs/DESIGN.md section 3 (each margin's sample cost).

``feedback_type`` picks the primary metric(s); every other metric with data
is a one-sided non-inferiority guardrail (see :mod:`.decision`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MetricSpec",
    "METRICS",
    "METRIC_ORDER",
    "PRIMARY_METRICS",
    "FeedbackType",
    "primary_metrics",
    "guardrail_metrics",
]

FeedbackType = Literal["performance", "quality", "reliability", "usage", "all"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str            # key in ArmStats
    label: str           # human-readable name
    kind: Literal["proportion", "mean", "logmean"]
    direction: int       # +1: higher is better, -1: lower is better

    def margin_on_test_scale(self, margin: float) -> float:
        """A guardrail margin expressed on the scale the test works on.

        For latency the margin is a relative increase of the geometric mean
        (0.05 = 5 % slower), i.e. ``log(1 + margin)`` on the log scale; for the
        others it is absolute (points of rate, or units of the metric).
        """
        if self.kind == "logmean":
            return math.log1p(margin)
        return margin


METRICS: dict[str, MetricSpec] = {
    "success": MetricSpec("success", "success rate", "proportion", +1),
    "latency": MetricSpec("latency", "latency", "logmean", -1),
    "quality": MetricSpec("quality", "quality score", "mean", +1),
    "rating": MetricSpec("rating", "user rating", "mean", +1),
    "retries": MetricSpec("retries", "retries", "mean", -1),
}

METRIC_ORDER: tuple[str, ...] = ("success", "latency", "quality", "rating", "retries")

#: feedback_type -> primary metrics.  ``all`` uses Holm's correction across them.
PRIMARY_METRICS: dict[str, tuple[str, ...]] = {
    "performance": ("latency",),
    "quality": ("quality",),
    "reliability": ("success",),
    "usage": ("success",),
    "all": ("success", "latency", "quality"),
}


def primary_metrics(feedback_type: str) -> tuple[str, ...]:
    try:
        return PRIMARY_METRICS[feedback_type]
    except KeyError:
        raise ValueError(
            f"unknown feedback_type {feedback_type!r}; choose one of {sorted(PRIMARY_METRICS)}"
        ) from None


def guardrail_metrics(feedback_type: str) -> tuple[str, ...]:
    prim = primary_metrics(feedback_type)
    return tuple(m for m in METRIC_ORDER if m not in prim)
