"""What collection stored, over every pattern (the demo's closing summary): per pattern the windows
collected and their source, valid and quarantined rows; then the quarantine reasons, most common
first."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.storage.tables import feedback_partitions as fp
from feedback_loop_dagster.lib.storage.tables import feedback_quarantine as fq


@dataclass(frozen=True)
class PatternCollection:
    pattern_id: str
    windows: int
    source_rows: int
    valid_rows: int
    quarantined_rows: int


def collection_by_pattern(conn: Connection) -> list[PatternCollection]:
    rows = conn.execute(
        sa.select(
            fp.c.pattern_id,
            sa.func.count().label("windows"),
            sa.func.sum(fp.c.source_rows),
            sa.func.sum(fp.c.valid_rows),
            sa.func.sum(fp.c.quarantined_rows),
        )
        .group_by(fp.c.pattern_id)
        .order_by(fp.c.pattern_id)
    ).all()
    return [PatternCollection(*row) for row in rows]


def quarantine_reasons(conn: Connection) -> list[tuple[str, int]]:
    """(reason, rows) over the whole quarantine, most common first."""
    return [tuple(row) for row in conn.execute(
        sa.select(fq.c.reason, sa.func.count()).group_by(fq.c.reason).order_by(sa.func.count().desc())
    ).all()]
