"""Daily sufficient statistics per (pattern, version, day), computed set-based from feedback rows."""

from __future__ import annotations

import pandas as pd

from feedback_loop_dagster.lib.registry.versions import IMPLICIT_VERSION
from feedback_loop_dagster.lib.stats import ArmStats
from feedback_loop_dagster.lib.stats.sufficient import execution_aggregates
from feedback_loop_dagster.lib.storage.tables import DAILY_STAT_COLUMNS, daily_version_stats

GROUP = ["pattern_id", "pattern_key", "version", "day"]


def with_version(feedback: pd.DataFrame) -> pd.DataFrame:
    """Feedback rows with `version` (the registry name) and `day`."""
    return feedback.assign(
        version=feedback["pattern_version"].where(feedback["pattern_version"].notna(), IMPLICIT_VERSION),
        day=feedback["window_start"],
    )


def daily_stats(feedback: pd.DataFrame) -> pd.DataFrame:
    """One row per (pattern_id, pattern_key, version, day): DAILY_STAT_COLUMNS plus error_counts (JSON)."""
    if feedback.empty:
        return pd.DataFrame(columns=[*GROUP, *DAILY_STAT_COLUMNS, "error_counts"])
    rows = with_version(feedback)
    frame = execution_aggregates(rows)[list(DAILY_STAT_COLUMNS)]
    frame[GROUP] = rows[GROUP]
    stats = frame.groupby(GROUP, as_index=False, sort=True)[list(DAILY_STAT_COLUMNS)].sum()

    finished = rows["status"].notna() & (rows["status"] != "in_progress")
    failed = rows[finished & (rows["status"] != "success")]
    error_class = failed["error_type"].where(failed["error_type"].notna(), failed["status"])
    errors = (
        failed.assign(error_class=error_class)
        .groupby(GROUP, sort=False)["error_class"]
        # text, as bulk_insert writes it (it bypasses the column type's encoding)
        .agg(lambda s: daily_version_stats.c.error_counts.type.dumps(s.value_counts().to_dict()))
        .rename("error_counts")
    )
    stats = stats.merge(errors, left_on=GROUP, right_index=True, how="left")
    stats["error_counts"] = stats["error_counts"].fillna("{}")
    return stats


def arm_stats(aggregates: dict) -> ArmStats:
    """ArmStats from a row of summed daily statistics (SQL SUM(...) or a pandas sum)."""
    return ArmStats.from_aggregates({k: aggregates[k] for k in DAILY_STAT_COLUMNS})
