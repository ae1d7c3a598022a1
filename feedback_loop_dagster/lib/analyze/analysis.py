"""Analyse a set of (pattern, window) partitions with set-based reads of the warehouse.

For each partition: refresh the daily statistics of every day its comparison looks at (they are
a pure function of that day's feedback rows, so late rows are picked up), then compute each
version's metrics over the trailing `time_window_days` and compare them with the period before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from feedback_loop_dagster.lib.analyze.daily import arm_stats, daily_stats, with_version
from feedback_loop_dagster.lib.analyze.metrics import compare_periods, version_metrics
from feedback_loop_dagster.lib.registry.policies import get_policy
from feedback_loop_dagster.lib.registry.versions import ensure_observed_versions
from feedback_loop_dagster.lib.stats import ArmStats, Policy
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.partition_rows import delete_partition_rows
from feedback_loop_dagster.lib.storage.pattern_keys import pattern_ids_for_keys
from feedback_loop_dagster.lib.storage.writes import bulk_insert

FEEDBACK_FOR_ANALYSIS = (
    "pattern_id",
    "pattern_key",
    "window_start",
    "pattern_version",
    "status",
    "duration_ms",
    "quality_score",
    "user_rating",
    "retry_count",
    "error_type",
)


@dataclass
class AnalysisReport:
    metrics: pd.DataFrame  # the pattern_metrics rows written
    policies: dict[str, Policy]


def analyze_partitions(warehouse: Engine, pairs: Sequence[tuple[str, date]]) -> AnalysisReport:
    pairs = sorted(set(pairs))
    ids_by_key = pattern_ids_for_keys(warehouse, {k for k, _ in pairs})
    with warehouse.begin() as conn:
        policies = {pattern_id: get_policy(conn, pattern_id) for pattern_id in ids_by_key.values()}
        span = {key: 2 * policies[ids_by_key[key]].time_window_days for key, _ in pairs}
        first_day = min(w - timedelta(days=span[k] - 1) for k, w in pairs)
        rows = _read_feedback(conn, sorted(ids_by_key.values()), first_day, max(w for _, w in pairs))
        days = _refresh_daily_stats(conn, rows, ids_by_key, first_day, max(w for _, w in pairs))
        for pattern_id in ids_by_key.values():
            versions = rows.loc[rows["pattern_id"] == pattern_id, "version"].unique()
            ensure_observed_versions(conn, pattern_id, versions)

        records = []
        for key, window in pairs:
            pattern_id = ids_by_key[key]
            policy = policies[pattern_id]
            period = policy.time_window_days
            current_start = window - timedelta(days=period - 1)
            previous_start = current_start - timedelta(days=period)
            in_pattern = days[days["pattern_id"] == pattern_id]
            current = in_pattern[(in_pattern["day"] >= current_start) & (in_pattern["day"] <= window)]
            previous = in_pattern[(in_pattern["day"] >= previous_start) & (in_pattern["day"] < current_start)]
            pattern_rows = rows[
                (rows["pattern_id"] == pattern_id) & (rows["day"] >= current_start) & (rows["day"] <= window)
            ]
            for version, version_days in current.groupby("version"):
                stats = _sum(version_days)
                before = _sum(previous[previous["version"] == version])
                comparison, regressions = compare_periods(before, stats, policy)
                records.append(
                    {
                        "pattern_key": key,
                        "window_start": window,
                        "version": version,
                        "pattern_id": pattern_id,
                        "period_start": current_start,
                        **version_metrics(pattern_rows[pattern_rows["version"] == version], stats),
                        "comparison": json.dumps(comparison, sort_keys=True),
                        "regressions": json.dumps(regressions),
                    }
                )
        metrics = pd.DataFrame(records, columns=[c.name for c in tables.pattern_metrics.columns])
        delete_partition_rows(conn, tables.pattern_metrics, pairs)
        bulk_insert(conn, tables.pattern_metrics, metrics)
    return AnalysisReport(metrics=metrics, policies=policies)


def _read_feedback(conn: Connection, pattern_ids: list[str], first: date, last: date) -> pd.DataFrame:
    feedback = tables.feedback
    query = sa.select(*(feedback.c[c] for c in FEEDBACK_FOR_ANALYSIS)).where(
        feedback.c.pattern_id.in_(pattern_ids), feedback.c.window_start.between(first, last)
    )
    rows = pd.DataFrame(conn.execute(query).all(), columns=list(FEEDBACK_FOR_ANALYSIS))
    for column in ("duration_ms", "quality_score", "user_rating"):
        rows[column] = pd.to_numeric(rows[column]).astype("float64")
    rows["retry_count"] = pd.to_numeric(rows["retry_count"]).fillna(0).astype("int64")
    return with_version(rows)


def _refresh_daily_stats(
    conn: Connection, rows: pd.DataFrame, ids_by_key: dict[str, str], first: date, last: date
) -> pd.DataFrame:
    """Replace the daily statistics of [first, last] for these patterns; returns them."""
    stats = daily_stats(rows.drop(columns=["version", "day"]))
    table = tables.daily_version_stats
    conn.execute(table.delete().where(table.c.pattern_id.in_(list(ids_by_key.values())), table.c.day.between(first, last)))
    bulk_insert(conn, table, stats[[c.name for c in table.columns]])
    return stats


def _sum(days: pd.DataFrame) -> ArmStats:
    if days.empty:
        return ArmStats()
    return arm_stats(days.sum(numeric_only=True).to_dict())
