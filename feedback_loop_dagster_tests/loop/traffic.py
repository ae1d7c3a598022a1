"""Seeded days of one pattern's traffic (v1, a given success and timeout rate), registered, loaded
and collected: the input of the analysis, proposal and experiment tests."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from feedback_loop_dagster.lib.collect.collector import collect_feedback
from feedback_loop_dagster.lib.registry.policies import set_policy
from feedback_loop_dagster.lib.registry.versions import register_version
from feedback_loop_dagster.lib.stats import get_preset
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster_tests.factories import execution, insert_executions

START = datetime(2026, 3, 2).date()
PATTERN = "summarise"
POLICY = get_preset("production", feedback_type="reliability", time_window_days=3)


def traffic(day, n, success_rate, timeout_rate=0.0, seed=0, version="v1"):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        draw = rng.random()
        status = "timeout" if draw < timeout_rate else ("success" if draw < timeout_rate + success_rate else "failure")
        duration = float(rng.lognormal(np.log(800), 0.4)) if status != "timeout" else 2000.0
        rows.append(
            execution(
                day=day, minute=int(rng.integers(0, 1400)), pattern_id=PATTERN, pattern_version=version,
                status=status, duration_ms=duration, error_type={"timeout": "TimeoutError", "failure": "ToolError"}.get(status),
                completed_at=None, quality_score=float(rng.beta(8, 2)), unit_id=f"user-{rng.integers(0, 50)}",
            )
        )
    return rows


def load(engine, days):
    register_pattern_ids(engine, [PATTERN])
    with engine.begin() as conn:
        register_version(conn, PATTERN, "v1", {"timeout_ms": 2000})
        set_policy(conn, PATTERN, POLICY)
    for offset, rows in days:
        insert_executions(engine, rows)
    pairs = [(PATTERN, START + timedelta(days=d)) for d, _ in days]
    collect_feedback(engine, engine, pairs)
    return pairs
