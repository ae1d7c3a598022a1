"""Versioned, idempotent schema migrations for the source and the warehouse.

Each migration is a numbered step recorded in `feedback_loop_migrations`. Steps only create or
add what is missing (checkfirst), so re-running is a no-op and an older schema is brought
forward, never dropped. Later issues append steps; the numbers never change once released.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import StorageError, is_postgres


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def _create(*table_objects: sa.Table) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        for table in table_objects:
            table.create(conn, checkfirst=True)

    return apply


def _create_indexes(*indexes: sa.Index) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        for index in indexes:
            index.create(conn, checkfirst=True)

    return apply


SOURCE_MIGRATIONS: Sequence[Migration] = (
    Migration(1, "create hook_executions", _create(tables.hook_executions)),
)

WAREHOUSE_MIGRATIONS: Sequence[Migration] = (
    Migration(
        1,
        "feedback collection: patterns, feedback, quarantine, partition accounting",
        _create(
            tables.patterns,
            tables.feedback,
            tables.feedback_quarantine,
            tables.feedback_partitions,
        ),
    ),
    Migration(
        2,
        "improvement loop: versions, labels, policies, daily stats, metrics, proposals, experiments, "
        "A/B results, decisions, lineage",
        _create(
            tables.pattern_versions,
            tables.pattern_labels,
            tables.pattern_policies,
            tables.daily_version_stats,
            tables.pattern_metrics,
            tables.proposals,
            tables.experiments,
            tables.ab_results,
            tables.decisions,
            tables.lineage_edges,
        ),
    ),
    Migration(3, "lineage: indexes for traversal and the cycle check", _create_indexes(*tables.LINEAGE_INDEXES)),
    Migration(4, "loop settings: the first day with data, where the daily partitions start", _create(tables.loop_settings)),
    Migration(5, "partition status: each partition's outcome at each stage", _create(tables.partition_status)),
)

# Serialises concurrent migrators on PostgreSQL (any constant works; this one spells "FLDM").
_ADVISORY_LOCK_ID = 0x464C444D


def migrate(engine: Engine, component: str, migrations: Sequence[Migration]) -> list[Migration]:
    """Apply the steps not yet recorded for `component`; returns the ones applied now."""
    applied_now = []
    with engine.begin() as conn:
        _lock(conn)
        tables.schema_migrations.create(conn, checkfirst=True)
        done = set(
            conn.scalars(
                sa.select(tables.schema_migrations.c.version).where(
                    tables.schema_migrations.c.component == component
                )
            )
        )
        known = {m.version for m in migrations}
        if done - known:
            raise StorageError(
                f"the {component} schema in {engine.url.render_as_string(hide_password=True)} is at "
                f"version {max(done)}, newer than this code knows ({max(known)}): upgrade feedback-loop-dagster"
            )
        # One transaction for all pending steps: a failure leaves the schema as it was.
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in done:
                continue
            migration.apply(conn)
            conn.execute(
                tables.schema_migrations.insert().values(
                    component=component,
                    version=migration.version,
                    name=migration.name,
                    applied_at=datetime.now(UTC),
                )
            )
            applied_now.append(migration)
    return applied_now


def _lock(conn: Connection) -> None:
    if is_postgres(conn.engine):
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})


def init_databases(warehouse: Engine, source: Engine) -> dict[str, list[Migration]]:
    """What `feedback-loop init-db` does: bring both schemas to the current version."""
    return {
        "source": migrate(source, "source", SOURCE_MIGRATIONS),
        "warehouse": migrate(warehouse, "warehouse", WAREHOUSE_MIGRATIONS),
    }
