"""Hand-built executions for precise tests (the simulator covers realistic volume)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine

from feedback_loop_dagster.lib.storage.tables import hook_executions
from feedback_loop_dagster.lib.storage.writes import bulk_insert

DAY = date(2026, 3, 2)
_ids = itertools.count()


def execution(day: date = DAY, minute: int = 60, **overrides: Any) -> dict[str, Any]:
    started = datetime.combine(day, datetime.min.time(), UTC) + timedelta(minutes=minute)
    row = {
        "execution_id": f"exec-{next(_ids)}",
        "pattern_id": "code-review",
        "pattern_version": "v1",
        "started_at": started,
        "completed_at": started + timedelta(milliseconds=250),
        "duration_ms": 250.0,
        "status": "success",
        "quality_score": 0.8,
        "quality_results": None,
        "performance_score": 0.7,
        "user_rating": None,
        "retry_count": 0,
        "error_type": None,
        "error_message": None,
        "unit_id": "user-1",
    }
    row.update(overrides)
    return row


def insert_executions(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        bulk_insert(conn, hook_executions, pd.DataFrame(rows))
