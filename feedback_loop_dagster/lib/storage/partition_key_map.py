"""The pattern registry's mapping between pattern ids and their partition keys."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from feedback_loop_dagster.lib.errors import InvalidInput, NotFound
from feedback_loop_dagster.lib.safe_partition_key import safe_partition_key
from feedback_loop_dagster.lib.storage.tables import patterns
from feedback_loop_dagster.lib.storage.upserts import upsert


class UnknownPartitionKey(NotFound):
    pass


def register_pattern_ids(engine: Engine, pattern_ids: Iterable[str]) -> dict[str, str]:
    """Record the partition key of each pattern id (idempotent); returns id -> key."""
    keys = {pattern_id: safe_partition_key(pattern_id) for pattern_id in set(pattern_ids)}
    if not keys:
        return {}
    now = datetime.now(UTC)
    with engine.begin() as conn:
        upsert(
            conn,
            patterns,
            [{"partition_key": k, "pattern_id": p, "created_at": now} for p, k in keys.items()],
            ["pattern_id"],
            update=False,
        )
        stored = dict(
            conn.execute(
                sa.select(patterns.c.pattern_id, patterns.c.partition_key).where(
                    patterns.c.partition_key.in_(list(keys.values()))
                )
            ).all()
        )
    clashes = {p: k for p, k in keys.items() if stored.get(p) != k}
    if clashes:
        raise InvalidInput(
            "partition key collision: "
            + "; ".join(f"pattern {p!r} -> key {k!r} is taken by another pattern" for p, k in clashes.items())
        )
    return keys


def pattern_ids_for_keys(engine: Engine, keys: Iterable[str]) -> dict[str, str]:
    """key -> original pattern id; every key must have been registered."""
    wanted = sorted(set(keys))
    with engine.connect() as conn:
        found = dict(
            conn.execute(
                sa.select(patterns.c.partition_key, patterns.c.pattern_id).where(
                    patterns.c.partition_key.in_(wanted)
                )
            ).all()
        )
    missing = [k for k in wanted if k not in found]
    if missing:
        raise UnknownPartitionKey(
            f"no pattern is registered for partition key(s) {missing[:5]}: register patterns with "
            "`feedback-loop patterns sync` or let new_executions_sensor add them"
        )
    return found


def partition_keys_by_id(conn: Connection) -> dict[str, str]:
    """pattern id -> partition key, for every registered pattern."""
    return dict(conn.execute(sa.select(patterns.c.pattern_id, patterns.c.partition_key)).all())
