"""The registered patterns at a glance (`feedback-loop patterns list`): each pattern's partition key,
number of versions, active and candidate versions, running experiment, policy and the newest
window collected."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.registry.policies import default_policy
from feedback_loop_dagster.lib.storage import tables as t
from feedback_loop_dagster.lib.storage.vocabulary import ExperimentStatus


def pattern_rows(conn: Connection) -> list[dict]:
    """One row per registered pattern, ordered by pattern id."""
    patterns = conn.execute(sa.select(t.patterns.c.pattern_id, t.patterns.c.partition_key).order_by(t.patterns.c.pattern_id)).all()
    counts = dict(conn.execute(sa.select(t.pattern_versions.c.pattern_id, sa.func.count()).group_by(t.pattern_versions.c.pattern_id)).all())
    labels = {
        (p, label): v
        for p, label, v in conn.execute(
            sa.select(t.pattern_labels.c.pattern_id, t.pattern_labels.c.label, t.pattern_versions.c.version).join(
                t.pattern_versions, t.pattern_versions.c.id == t.pattern_labels.c.version_id
            )
        )
    }
    e, pp, fp = t.experiments, t.pattern_policies, t.feedback_partitions
    running = {p: f"#{i} ({k})" for i, p, k in conn.execute(
        sa.select(e.c.id, e.c.pattern_id, e.c.kind).where(e.c.status == ExperimentStatus.RUNNING))}
    policies = {p: policy.get("name") for p, policy in conn.execute(sa.select(pp.c.pattern_id, pp.c.policy))}
    collected = dict(conn.execute(sa.select(fp.c.pattern_id, sa.func.max(fp.c.window_start)).group_by(fp.c.pattern_id)).all())
    default = default_policy().name
    return [
        {
            "pattern_id": p,
            "partition_key": key,
            "versions": counts.get(p, 0),
            "active": labels.get((p, "active")),
            "candidate": labels.get((p, "candidate")),
            "running_experiment": running.get(p),
            "policy": policies.get(p) or f"{default} (default)",
            "last_window": collected[p].isoformat() if collected.get(p) else None,
        }
        for p, key in patterns
    ]
