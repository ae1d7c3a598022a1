"""Per-pattern experiment policies (presets of DESIGN.md section 3, stored as JSON)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.stats import Policy, get_preset
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.upserts import upsert

DEFAULT_POLICY_ENV = "FEEDBACK_LOOP_DEFAULT_POLICY"
DEFAULT_PRESET = "production"


def default_policy() -> Policy:
    """The policy of a pattern without its own: the preset named by FEEDBACK_LOOP_DEFAULT_POLICY."""
    return get_preset(os.environ.get(DEFAULT_POLICY_ENV) or DEFAULT_PRESET)


def get_policy(conn: Connection, pattern_id: str) -> Policy:
    return get_policies(conn, [pattern_id])[pattern_id]


def get_policies(conn: Connection, pattern_ids: Iterable[str]) -> dict[str, Policy]:
    """Each pattern's policy (its own, else the default), in one query."""
    wanted = sorted(set(pattern_ids))
    t = tables.pattern_policies
    stored = dict(conn.execute(sa.select(t.c.pattern_id, t.c.policy).where(t.c.pattern_id.in_(wanted))).all()) if wanted else {}
    default = default_policy()
    return {p: Policy.model_validate(stored[p]) if p in stored else default for p in wanted}


def set_policy(conn: Connection, pattern_id: str, policy: Policy) -> None:
    upsert(
        conn,
        tables.pattern_policies,
        [{"pattern_id": pattern_id, "policy": policy, "updated_at": datetime.now(UTC)}],
        ["pattern_id"],
    )
