"""Which pattern a name given by a person means: its original id or its partition key.

The Dagster UI shows partition keys (`agent-planner-v2-be1c686d5091` for `agent|planner, v2`),
people type ids, so every command accepts both and one resolver decides, the same way for all.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from feedback_loop_dagster.lib.collect.source import has_pattern
from feedback_loop_dagster.lib.errors import NotFound
from feedback_loop_dagster.lib.settings import SOURCE_TABLE
from feedback_loop_dagster.lib.storage import tables


class UnknownPattern(NotFound):
    """No pattern has this id or partition key."""


def _registered(conn, name: str) -> str | None:
    """The pattern `name` names in the warehouse: an id (registry, versions, policies) or a key."""
    p = tables.patterns
    rows = conn.execute(
        sa.select(p.c.pattern_id, p.c.partition_key).where(sa.or_(p.c.pattern_id == name, p.c.partition_key == name))
    ).all()
    if any(pattern_id == name for pattern_id, _ in rows):
        return name
    if rows:  # a partition key (unique, and never another pattern's id: register_pattern_ids checks)
        return rows[0][0]
    for table in (tables.pattern_versions, tables.pattern_policies):
        if conn.scalar(sa.select(table.c.pattern_id).where(table.c.pattern_id == name).limit(1)) is not None:
            return name
    return None


def resolve_pattern(warehouse: Engine, name: str, source: Engine | None = None, create: bool = False) -> str:
    """The original id of the pattern `name` names: a pattern id known to the registry or to the
    source (`source`, the engine holding hook_executions), or a registered partition key.

    An unknown `name` is an `UnknownPattern` error, the same for every caller; with `create` it
    is returned as a new pattern's id instead (the caller registers it with its first change).
    """
    with warehouse.connect() as conn:
        found = _registered(conn, name)
    if found is None and source is not None and has_pattern(source, name):
        found = name
    if found is not None:
        return found
    if create:
        return name
    raise UnknownPattern(
        f"unknown pattern {name!r}: no pattern has this id or partition key (`feedback-loop patterns list`) "
        f"and {SOURCE_TABLE} has no executions of it"
    )
