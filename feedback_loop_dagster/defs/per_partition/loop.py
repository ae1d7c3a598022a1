"""Running one stage of the loop over a run's partitions, so that each partition's outcome is its own.

One transaction per stage and run, and inside it one SAVEPOINT per unit of work (a partition, or
one pattern's windows for the stages that read a pattern's history once): an error in a unit rolls
back that unit's changes only, fails its partitions with the error as the reason, and the other
units go on. Partitions an earlier stage failed are skipped (lib/partition_status.py). Windows go
in order, because each stage reads what the previous window left (the last A/B look, the current
labels). Every outcome is recorded in the same transaction as the work it describes.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import groupby
from typing import Generic, TypeVar

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from feedback_loop_dagster.defs.code_location.partitions import partition_key, run_partition_pairs
from feedback_loop_dagster.lib.partition_status import FAILED, OK, SKIPPED, StageOutcome, blocked_partitions, record_outcomes
from feedback_loop_dagster.lib.storage.partition_key_map import pattern_ids_for_keys

T = TypeVar("T")

# The database itself is unusable (connection lost, locked beyond the busy timeout): not a
# problem of one partition, so the whole stage fails and keeps nothing.
DATABASE_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError)


@dataclass(frozen=True)
class Partition:
    """One (pattern, window) partition of a run, with the pattern's original id."""

    key: str
    window: date
    pattern_id: str

    @property
    def pair(self) -> tuple[str, date]:
        return self.key, self.window

    @property
    def dagster_key(self) -> str:
        return str(partition_key(self.key, self.window))


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a stage did for one partition: `value` is the step's result when `status` is ok."""

    partition: Partition
    status: str
    reason: str | None = None
    value: T | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


def run_partitions(context: dg.AssetExecutionContext, warehouse: Engine) -> list[Partition]:
    """The run's partitions, oldest window first."""
    pairs = set(run_partition_pairs(context))
    ids = pattern_ids_for_keys(warehouse, {k for k, _ in pairs})
    return sorted((Partition(k, w, ids[k]) for k, w in pairs), key=lambda p: (p.window, p.key))


def each_partition(
    context: dg.AssetExecutionContext, warehouse: Engine, stage: str, step: Callable[[Connection, Partition], T]
) -> list[Outcome[T]]:
    """`step(conn, partition)` for every partition of the run that an earlier stage did not fail,
    each in its own savepoint."""
    return _run_stage(context, warehouse, stage, lambda todo: [[p] for p in todo], lambda conn, unit: [step(conn, unit[0])])


def each_pattern(
    context: dg.AssetExecutionContext,
    warehouse: Engine,
    stage: str,
    step: Callable[[Connection, list[Partition]], Sequence[T]],
) -> list[Outcome[T]]:
    """`step(conn, partitions)` once per pattern, with its partitions oldest first, in one
    savepoint; it returns one value per partition, in order."""

    def by_pattern(todo: list[Partition]) -> list[list[Partition]]:
        ordered = sorted(todo, key=lambda p: (p.key, p.window))
        return [list(unit) for _, unit in groupby(ordered, key=lambda p: p.key)]

    return _run_stage(context, warehouse, stage, by_pattern, step)


def _run_stage(
    context: dg.AssetExecutionContext,
    warehouse: Engine,
    stage: str,
    units: Callable[[list[Partition]], list[list[Partition]]],
    call: Callable[[Connection, list[Partition]], Sequence[T]],
) -> list[Outcome[T]]:
    partitions = run_partitions(context, warehouse)
    outcomes: dict[Partition, Outcome[T]] = {}
    with warehouse.begin() as conn:
        blocked = blocked_partitions(conn, stage, [p.pair for p in partitions])
        for p in partitions:
            if p.pair in blocked:
                outcomes[p] = Outcome(p, SKIPPED, blocked[p.pair])
        for unit in units([p for p in partitions if p.pair not in blocked]):
            try:
                with conn.begin_nested():
                    values = call(conn, unit)
            except DATABASE_UNAVAILABLE:
                raise
            except Exception as exc:  # noqa: BLE001 - any other error belongs to this unit's partitions
                reason = f"{type(exc).__name__}: {exc}"
                context.log.error(
                    f"{stage} failed for {', '.join(p.dagster_key for p in unit)}: {reason}\n{traceback.format_exc()}"
                )
                outcomes.update((p, Outcome(p, FAILED, reason)) for p in unit)
            else:
                outcomes.update((p, Outcome(p, OK, value=v)) for p, v in zip(unit, values, strict=True))
        ordered = [outcomes[p] for p in partitions]
        record_stage(conn, context, stage, ordered)
    return ordered


def record_stage(conn: Connection, context: dg.AssetExecutionContext, stage: str, outcomes: Sequence[Outcome]) -> None:
    """Store the stage's outcome for each partition, with the run to look at in the UI."""
    record_outcomes(
        conn,
        [
            StageOutcome(o.partition.key, o.partition.window, o.partition.pattern_id, stage, o.status, o.reason, context.run.run_id)
            for o in outcomes
        ],
    )
