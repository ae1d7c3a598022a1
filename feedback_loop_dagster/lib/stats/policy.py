"""Experiment policies (pydantic) and the presets of DESIGN.md section 3.

Field names of the original design are kept: ``auto_apply_threshold``,
``min_sample_size``, ``significance_level``, ``enable_ab_testing``,
``feedback_type``, ``time_window_days``.  Invalid values raise
``pydantic.ValidationError`` naming the field; unknown fields are rejected.

=============  =========  =====  =====  ==========  ======  ========  =============================
preset         threshold  min n  alpha  feedback    window  max days  notes
=============  =========  =====  =====  ==========  ======  ========  =============================
production     0.99       100    0.01   all         30      14
development    0.85       20     0.10   all         3       7
quality        0.90       50     0.05   quality     14      14
monitoring     1.00       100    0.05   all         1       -         never applies, no experiments
=============  =========  =====  =====  ==========  ======  ========  =============================

``window`` is ``time_window_days`` (the original design's values: the days of feedback the
analysis and the proposals look at); ``max days`` is ``max_experiment_days``, after which an
experiment without a decision ends as inconclusive (see docs/DESIGN.md section 3).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .metrics import FeedbackType
from .sequential import DEFAULT_TAU_SD
from .srm import SRM_THRESHOLD

__all__ = ["GuardrailMargins", "Policy", "PRESETS", "get_preset", "PRESET_NAMES"]


class GuardrailMargins(BaseModel):
    """Non-inferiority margins: how much worse a guardrail metric may get.

    ``success``: absolute drop of the success rate (0.05 = 5 percentage
    points).  ``latency``: relative rise of the geometric mean (0.10 = 10 %
    slower).  ``quality``/``rating``: absolute drop of the mean (scores are in
    [0, 1]; 0.05 = 5 points).  ``retries``: absolute rise of the mean retry
    count per execution (0.25 = one more retry per four executions).

    A candidate is applied only once every guardrail has *shown* that it is
    not worse than its margin, so a margin is also a sample cost: the defaults
    are what a pattern's traffic can show within an experiment's two weeks
    (docs/DESIGN.md section 3 gives each one's executions per arm).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    success: float = Field(0.05, ge=0.0, le=1.0)
    latency: float = Field(0.10, ge=0.0, le=10.0)
    quality: float = Field(0.05, ge=0.0, le=1.0)
    rating: float = Field(0.05, ge=0.0, le=1.0)
    retries: float = Field(0.25, ge=0.0)

    def for_metric(self, metric: str) -> float:
        return float(getattr(self, metric))


class Policy(BaseModel):
    """How an experiment is run and decided.

    * ``significance_level`` (alpha): level of the tests and intervals.
    * ``auto_apply_threshold``: ``confidence_score = 1 - p`` must reach it to
      apply (on top of significance at alpha).
    * ``min_sample_size``: per-arm floor before any decision (and of the
      power-based sample size).
    * ``minimum_detectable_effect``: relative effect (0.05 = 5 %) the
      experiment is sized for, at ``power``.
    * ``test_method``: ``sequential`` (always valid; default) or
      ``fixed_horizon`` (Welch / two-proportion z, valid only at the planned
      sample size: the rule waits for it).
    * ``sequential_tau``: mixture standard deviation of the mSPRT in units of
      the pooled per-execution standard deviation (see :mod:`.sequential`).
    * ``auto_apply``: ``False`` never applies automatically (monitoring);
      ``require_review``: an apply verdict waits for a human.
    * ``traffic_split``: planned treatment share, for the SRM check.
    * ``max_experiment_days`` / ``max_sample_per_arm``: an experiment that
      reaches either without a decision ends as ``inconclusive`` (control
      kept); ``None`` = no such limit.
    * ``max_invalid_share``: largest share of a window's rows the collector may quarantine; a
      partition above it fails its validity check and the later stages skip it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "default"
    feedback_type: FeedbackType = "all"
    auto_apply_threshold: float = Field(0.95, ge=0.0, le=1.0)
    min_sample_size: int = Field(30, ge=1)
    significance_level: float = Field(0.05, gt=0.0, le=0.5)
    enable_ab_testing: bool = True
    auto_apply: bool = True
    require_review: bool = False
    time_window_days: int = Field(7, ge=1)
    minimum_detectable_effect: float = Field(0.05, gt=0.0, le=10.0)
    power: float = Field(0.8, gt=0.0, lt=1.0)
    traffic_split: float = Field(0.5, gt=0.0, lt=1.0)
    test_method: Literal["sequential", "fixed_horizon"] = "sequential"
    sequential_tau: float = Field(DEFAULT_TAU_SD, gt=0.0, le=10.0)
    guardrail_margins: GuardrailMargins = Field(default_factory=GuardrailMargins)
    srm_threshold: float = Field(SRM_THRESHOLD, gt=0.0, lt=1.0)
    max_experiment_days: int | None = Field(14, ge=1)
    max_sample_per_arm: int | None = Field(None, ge=2)
    max_invalid_share: float = Field(0.05, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _power_above_alpha(self) -> "Policy":
        if self.power <= self.significance_level:
            raise ValueError("power must exceed significance_level")
        return self

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "Policy":
        """A preset by name, optionally with some fields changed (validated)."""
        return get_preset(name, **overrides)


PRESETS: dict[str, Policy] = {
    "production": Policy(
        name="production", feedback_type="all", auto_apply_threshold=0.99, min_sample_size=100,
        significance_level=0.01, time_window_days=30, max_experiment_days=14,
    ),
    "development": Policy(
        name="development", feedback_type="all", auto_apply_threshold=0.85, min_sample_size=20,
        significance_level=0.10, time_window_days=3, max_experiment_days=7,
    ),
    "quality": Policy(
        name="quality", feedback_type="quality", auto_apply_threshold=0.90, min_sample_size=50,
        significance_level=0.05, time_window_days=14, max_experiment_days=14,
    ),
    "monitoring": Policy(
        name="monitoring", feedback_type="all", auto_apply_threshold=1.0, min_sample_size=100,
        significance_level=0.05, enable_ab_testing=False, auto_apply=False, time_window_days=1,
        max_experiment_days=None,
    ),
}

PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)


def get_preset(name: str, **overrides: Any) -> Policy:
    """The preset ``name`` (``production``, ``development``, ``quality``, ``monitoring``).

    ``overrides`` replace fields and are validated like any policy.  An
    unknown name raises ``ValueError`` listing the choices.
    """
    try:
        base = PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown policy preset {name!r}; choose one of {', '.join(PRESET_NAMES)}") from None
    if not overrides:
        return base
    return Policy.model_validate({**base.model_dump(), **overrides})
