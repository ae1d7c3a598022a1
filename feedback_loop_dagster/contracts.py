"""The original design's contract models, kept so code written against it runs unchanged.

`ModelFeedbackLoopInput` validates like the original (ranges included) and, in addition, through
the statistical engine's `Policy`, because its policy fields become the pattern's stored policy.
Invalid values raise `ValueError` (pydantic's ValidationError) naming the field.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import Enum
from typing import Any, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, model_validator

from feedback_loop_dagster.lib.clock import utc_now
from feedback_loop_dagster.lib.partition_status import STAGES as ASSET_STAGES
from feedback_loop_dagster.lib.report.outcome import LoopReport
from feedback_loop_dagster.lib.stats import Policy


class FeedbackLoopStage(str, Enum):
    COLLECT = "collect"
    ANALYZE = "analyze"
    VALIDATE = "validate"
    APPLY = "apply"


# The original's four stages, then the assets this project adds between and after them; the
# loop's assets (lib/partition_status.STAGES) in the same order.
WORKFLOW_STAGES = ("collect", "analyze", "propose", "experiment", "validate", "apply", "lineage")
STAGE_OF_ASSET = dict(zip(ASSET_STAGES, WORKFLOW_STAGES, strict=True))

POLICY_FIELDS = (
    "feedback_type",
    "time_window_days",
    "auto_apply_threshold",
    "min_sample_size",
    "significance_level",
    "enable_ab_testing",
)


class ModelFeedbackLoopInput(BaseModel):
    """Run the loop for one pattern on its latest complete window (or `window`)."""

    model_config = ConfigDict(extra="forbid")

    operation: str = Field(default="analyze_and_improve", description="Kept for compatibility; the whole loop runs.")
    pattern_id: str = Field(..., min_length=1, description="Pattern to analyse and improve")
    feedback_type: Literal["performance", "quality", "reliability", "usage", "all"] = Field(
        default="performance", description="Primary metric: performance=latency, quality, reliability/usage=success, all"
    )
    time_window_days: int = Field(default=7, ge=1, le=90, description="Days of feedback analysed, ending at the window")
    auto_apply_threshold: float = Field(default=0.95, ge=0.0, le=1.0, description="confidence_score needed to apply")
    min_sample_size: int = Field(default=30, ge=10, description="Executions needed per arm (and to run at all)")
    significance_level: float = Field(default=0.05, ge=0.001, le=0.1, description="alpha of the tests")
    enable_ab_testing: bool = Field(default=True, description="Start A/B experiments for patchable proposals")
    stages_to_execute: list[FeedbackLoopStage] | None = Field(
        default=None, description="Kept for compatibility; the asset graph always runs every stage"
    )
    correlation_id: UUID = Field(default_factory=uuid4)
    metadata: dict[str, Any] = Field(default_factory=dict)
    window: date | None = Field(default=None, description="Window (UTC day) to run; default: the latest complete one")

    @model_validator(mode="after")
    def _valid_policy(self) -> ModelFeedbackLoopInput:
        Policy.model_validate({name: getattr(self, name) for name in POLICY_FIELDS})
        return self

    def policy(self, base: Policy) -> Policy:
        """`base` (the pattern's stored policy) with this input's policy fields."""
        return Policy.model_validate({**base.model_dump(), **{name: getattr(self, name) for name in POLICY_FIELDS}})


class ModelFeedbackLoopOutput(LoopReport):
    """Every field of the original output contract: the loop's figures (`LoopReport`, meanings in
    lib/report/outcome.py) and the run's own fields below."""

    success: bool
    pattern_id: str
    workflow_stages: dict[str, str] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)
    correlation_id: UUID
    duration_ms: float = 0.0
    timestamp: datetime = Field(default_factory=utc_now)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ModelResult:
    """Result of an orchestration: `data` is ModelFeedbackLoopOutput as JSON-ready values."""

    def __init__(
        self,
        success: bool,
        data: dict[str, Any] | None = None,
        error: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.success = success
        self.data = data or {}
        self.error = error
        self.metadata = metadata or {}

    def __repr__(self) -> str:
        return f"ModelResult(success={self.success!r}, error={self.error!r}, data=<{len(self.data)} fields>)"
