"""What the per-pattern stages share: running a step per partition, oldest window first."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine

from feedback_loop_dagster.lib.storage.pattern_keys import pattern_ids_for_keys

T = TypeVar("T")


def per_partition(
    warehouse: Engine, pairs: Sequence[tuple[str, date]], step: Callable[[Connection, str, date], T]
) -> list[T]:
    """Runs `step(conn, pattern_id, window)` in its own transaction for each partition.

    Windows go in order, because each stage reads what the previous window left (the last A/B
    look, the current labels); one transaction per partition keeps each change atomic.
    """
    ids = pattern_ids_for_keys(warehouse, {k for k, _ in pairs})
    results = []
    for key, window in sorted(set(pairs), key=lambda kw: (kw[1], kw[0])):
        with warehouse.begin() as conn:
            results.append(step(conn, ids[key], window))
    return results
