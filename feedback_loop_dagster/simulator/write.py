"""Writing simulated executions into a source database (one transaction, chunk by chunk)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from feedback_loop_dagster.lib.storage import migrations, tables
from feedback_loop_dagster.lib.storage.writes import bulk_insert
from feedback_loop_dagster.simulator.executions import (
    COLUMNS,
    DUPLICATE_KIND,
    SimulatedExecutions,
    SimulationConfig,
    iter_simulated_chunks,
)

log = logging.getLogger(__name__)

WRITE_CHUNK_ROWS = 100_000


class SimulationConflict(ValueError):
    """The rows (their execution ids) are already in the source: nothing was written."""


def write_executions(
    source_engine: Engine,
    executions: SimulatedExecutions | pd.DataFrame,
    *,
    chunk_rows: int = WRITE_CHUNK_ROWS,
) -> int:
    """Append a simulated frame to `hook_executions` in one transaction; returns rows written.

    Where the table refuses repeated execution ids, rows repeating an earlier id (the
    `duplicate_execution_id` kind) are left out with a warning."""
    frame = executions.frame if isinstance(executions, SimulatedExecutions) else executions
    chunks = (frame.iloc[start : start + chunk_rows] for start in range(0, len(frame), chunk_rows))
    return _write(source_engine, chunks)


def simulate_to_database(
    source_engine: Engine,
    config: SimulationConfig | None = None,
    *,
    create_table: bool = True,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Generate and write a simulation chunk by chunk, in one transaction; returns rows written
    (always `config.total_rows`). Memory stays bounded by `config.chunk_rows`. `progress` is
    called with the number of rows of each chunk as it is generated (a progress bar's update).

    With `create_table` the source schema is first brought up to date (idempotent), as
    `feedback-loop init-db` would. Where the table refuses repeated execution ids (a unique
    constraint), the simulation leaves out the `duplicate_execution_id` kind, so every row fits
    and the other kinds keep the malformed share."""
    config = (config or SimulationConfig()).resolved()
    if create_table:
        migrations.migrate(source_engine, "source", migrations.SOURCE_MIGRATIONS)
    with source_engine.connect() as conn:
        unique_ids = _enforces_unique_execution_id(conn)
    if unique_ids and DUPLICATE_KIND in config.malformed_kinds:
        kinds = tuple(k for k in config.malformed_kinds if k != DUPLICATE_KIND)
        if not kinds and config.malformed_share > 0:
            raise ValueError(
                f"{tables.hook_executions.name}.execution_id is unique in this database, so it cannot "
                f"hold {DUPLICATE_KIND} rows, the only malformed kind asked for"
            )
        config = replace(config, malformed_kinds=kinds)
        log.info("execution_id is unique in this source: simulating without %s rows", DUPLICATE_KIND)
    written = _write(source_engine, _reported((chunk.frame for chunk in iter_simulated_chunks(config)), progress))
    log.info(
        "simulated %d executions (seed %d, %d patterns, %d days before %s)",
        written, config.seed, config.patterns, config.days, config.end_date,
    )
    return written


def _reported(frames: Iterable[pd.DataFrame], progress: Callable[[int], object] | None) -> Iterable[pd.DataFrame]:
    for frame in frames:
        if progress is not None:
            progress(len(frame))
        yield frame


def _write(source_engine: Engine, frames: Iterable[pd.DataFrame]) -> int:
    written = 0
    dropped = 0
    try:
        with source_engine.begin() as conn:
            unique_ids = _enforces_unique_execution_id(conn)
            for frame in frames:
                frame = frame.loc[:, list(COLUMNS)]
                if unique_ids:
                    # The table cannot hold the duplicate_execution_id rows; leave them out.
                    repeated = frame["execution_id"].duplicated()
                    dropped += int(repeated.sum())
                    frame = frame.loc[~repeated]
                written += bulk_insert(conn, tables.hook_executions, frame)
    except Exception as exc:
        if _is_unique_violation(exc):
            raise SimulationConflict(
                f"some simulated execution ids are already in {tables.hook_executions.name}: this seed "
                "was already simulated into this database for an overlapping date range; choose "
                "another seed or end date (nothing was written)"
            ) from exc
        raise
    if dropped:
        log.warning(
            "%s.execution_id is unique in this database: left out %d rows that repeat an execution id",
            tables.hook_executions.name,
            dropped,
        )
    return written


def _enforces_unique_execution_id(conn: Connection) -> bool:
    """Whether the existing table refuses repeated execution ids (a unique constraint or index)."""
    inspector = sa.inspect(conn)
    name = tables.hook_executions.name
    wanted = ["execution_id"]
    return (
        any(c["column_names"] == wanted for c in inspector.get_unique_constraints(name))
        or any(ix["unique"] and ix["column_names"] == wanted for ix in inspector.get_indexes(name))
        or inspector.get_pk_constraint(name).get("constrained_columns") == wanted
    )


def _is_unique_violation(exc: BaseException) -> bool:
    # SQLite and executemany raise IntegrityError; COPY on psycopg raises UniqueViolation (23505).
    if isinstance(exc, sa.exc.IntegrityError):
        return True
    return getattr(exc, "sqlstate", None) == "23505"
