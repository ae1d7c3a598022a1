"""The validated feedback contract, as a pandera DataFrameModel.

Rows reach this schema already normalised (normalize.py); whatever still fails it is quarantined
with a reason, never dropped and never allowed to fail the partition.
"""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

STATUSES = ("success", "failure", "error", "timeout", "cancelled", "in_progress")
UtcTimestamp = Annotated[pd.DatetimeTZDtype, "ns", "UTC"]


class FeedbackSchema(pa.DataFrameModel):
    """One validated execution of a pattern."""

    seq: Series[int]
    execution_id: Series[str] = pa.Field(str_length={"min_value": 1})
    pattern_id: Series[str]
    pattern_version: Series[str] = pa.Field(nullable=True)
    started_at: Series[UtcTimestamp]
    completed_at: Series[UtcTimestamp] = pa.Field(nullable=True)
    duration_ms: Series[float] = pa.Field(ge=0, nullable=True)
    status: Series[str] = pa.Field(isin=STATUSES)
    quality_score: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    performance_score: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    user_rating: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    retry_count: Series[int] = pa.Field(ge=0)
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
