"""The validated feedback contract, as a pandera DataFrameModel.

Rows reach this schema already parsed (rules.py, which also turns these checks into SQL); whatever still fails it is quarantined
with a reason, never dropped and never allowed to fail the partition. Every numeric column has
plausibility bounds (DESIGN.md section 2), so nothing stored as valid can break a later stage.
"""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from feedback_loop_dagster.lib.registry.versions import VERSION_NAME_PATTERN
from feedback_loop_dagster.lib.settings import DEFAULT_MAX_DURATION_MS

EXECUTION_STATUSES = ("success", "failure", "error", "timeout", "cancelled", "in_progress")
# More retries than this for one execution is a broken counter, not a slow pattern.
MAX_RETRY_COUNT = 1000
DURATION_CEILING_ERROR = "above the duration ceiling"
UtcTimestamp = Annotated[pd.DatetimeTZDtype, "ns", "UTC"]


class FeedbackSchema(pa.DataFrameModel):
    """One validated execution of a pattern."""

    seq: Series[int]
    execution_id: Series[str] = pa.Field(str_length={"min_value": 1})
    pattern_id: Series[str]
    pattern_version: Series[str] = pa.Field(nullable=True, str_matches=VERSION_NAME_PATTERN)
    started_at: Series[UtcTimestamp]
    completed_at: Series[UtcTimestamp] = pa.Field(nullable=True)
    # the ceiling is configurable: validate with feedback_schema(max_duration_ms)
    duration_ms: Series[float] = pa.Field(ge=0, le=DEFAULT_MAX_DURATION_MS, nullable=True)
    status: Series[str] = pa.Field(isin=EXECUTION_STATUSES)
    quality_score: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    performance_score: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    user_rating: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    retry_count: Series[int] = pa.Field(ge=0, le=MAX_RETRY_COUNT)
    error_type: Series[str] = pa.Field(nullable=True)
    error_message: Series[str] = pa.Field(nullable=True)
    unit_id: Series[str] = pa.Field(nullable=True)

    @pa.dataframe_check(error="duration_ms is missing for a finished execution")
    @classmethod
    def duration_when_finished(cls, df: pd.DataFrame) -> Series[bool]:
        return df["duration_ms"].notna() | (df["status"] == "in_progress")

    @pa.dataframe_check(error="completed_at is before started_at")
    @classmethod
    def completed_after_started(cls, df: pd.DataFrame) -> Series[bool]:
        return df["completed_at"].isna() | (df["completed_at"] >= df["started_at"])

    class Config:
        name = "feedback"
        description = "Validated executions of a pattern in one window (DESIGN.md section 2)."


def feedback_schema(max_duration_ms: float = DEFAULT_MAX_DURATION_MS) -> pa.DataFrameSchema:
    """FeedbackSchema with the duration ceiling `max_duration_ms` (the model carries the default),
    and its twin for an execution whose duration comes from its timestamps: completed_at at most
    that long after started_at."""
    schema = FeedbackSchema.to_schema().update_column(
        "duration_ms", checks=[pa.Check.ge(0), pa.Check.le(max_duration_ms, error=DURATION_CEILING_ERROR)]
    )
    ceiling = pd.Timedelta(milliseconds=max_duration_ms)
    schema.checks = [
        *schema.checks,
        pa.Check(
            lambda df: df["completed_at"].isna() | (df["completed_at"] - df["started_at"] <= ceiling),
            error="completed_at is more than the duration ceiling after started_at",
        ),
    ]
    return schema
