"""Adding up stored daily statistics: a version's ArmStats over any span of days, from SQL."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.analyze.daily import arm_stats
from feedback_loop_dagster.lib.stats import ArmStats
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.tables import DAILY_STAT_COLUMNS


def period_stats(conn: Connection, pattern_id: str, version: str, first: date, last: date) -> ArmStats:
    """Summed daily statistics of one version over [first, last]; never rescans executions."""
    t = tables.daily_version_stats
    row = conn.execute(
        sa.select(*(sa.func.coalesce(sa.func.sum(t.c[c]), 0).label(c) for c in DAILY_STAT_COLUMNS)).where(
            t.c.pattern_id == pattern_id, t.c.version == version, t.c.day.between(first, last)
        )
    ).mappings().one()
    return arm_stats(dict(row))
