"""Hand-built executions for precise tests, and seeded days of a pattern's traffic across versions
(the simulator covers realistic volume)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from feedback_loop_dagster.lib.storage.tables import hook_executions
from feedback_loop_dagster.lib.storage.writes import bulk_insert

DAY = date(2026, 3, 2)
_ids = itertools.count()

# quality_results (with quality_score NULL) -> the stored quality score, or the quarantine reason
QUALITY_JSON = {
    '{"score": 0.8}': 0.8,
    '{"score": "0.8"}': 0.8,  # ->>'score' gives text; the original system casts it
    '{"score": " 7.5e-1 "}': 0.75,
    '{"score": 1}': 1.0,
    '{"score": 0.5, "checks": [1, 2], "score_note": "x"}': 0.5,
    "null": None,
    "{}": None,
    '{"score": null}': None,
    '{"checks": 3}': None,
    "[0.5]": "quality_results: not a JSON object",
    '"0.9"': "quality_results: not a JSON object",
    "0.9": "quality_results: not a JSON object",
    "true": "quality_results: not a JSON object",
    '{"score": NaN}': "quality_results: not valid JSON",
    '{"score": Infinity}': "quality_results: not valid JSON",
    '{"score": ': "quality_results: not valid JSON",
    "": "quality_results: not valid JSON",
    '{"score": "NaN"}': "quality_results: score is not finite",
    '{"score": "-Infinity"}': "quality_results: score is not finite",
    '{"score": 1e999}': "quality_results: score is not finite",
    '{"score": "high"}': "quality_results: score is not a number",
    '{"score": "0.8x"}': "quality_results: score is not a number",
    '{"score": "1_0"}': "quality_results: score is not a number",
    '{"score": true}': "quality_results: score is not a number",
    '{"score": [0.8]}': "quality_results: score is not a number",
    '{"score": {"value": 0.8}}': "quality_results: score is not a number",
    '{"score": 0.2, "score": 0.9}': "quality_results: duplicate score key",
    '{"score": 1.5}': "quality_score: must be <= 1",
    '{"score": "-0.1"}': "quality_score: must be >= 0",
}


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


def traffic(pattern_id, day, n, seed, versions=None, timeout_rate=None):
    """Executions of one day; `versions` maps each unit to a version (default v1). A version's
    timeout rate comes from `timeout_rate` (default: 10% for v1, none for others)."""
    rng = np.random.default_rng(seed)
    units = [f"user-{i}" for i in rng.integers(0, 5000, n)]
    names = versions(units) if versions else ["v1"] * n
    rows = []
    for unit, version in zip(units, names, strict=True):
        rate = (timeout_rate or {}).get(version, 0.10 if version == "v1" else 0.0)
        status = "timeout" if rng.random() < rate else ("success" if rng.random() < 0.95 else "failure")
        rows.append(execution(
            day=day, minute=int(rng.integers(0, 1400)), pattern_id=pattern_id, pattern_version=version, status=status,
            duration_ms=2000.0 if status == "timeout" else float(rng.lognormal(np.log(800), 0.4)),
            error_type={"timeout": "TimeoutError", "failure": "ToolError"}.get(status), completed_at=None,
            quality_score=float(rng.beta(8, 2)), unit_id=unit,
        ))
    return rows
