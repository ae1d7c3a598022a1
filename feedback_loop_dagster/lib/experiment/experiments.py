"""Experiments: candidate (treatment) against the active version (control), and the watch that
follows a promotion (the new active version against the one it replaced)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.propose.patch import merge_patch
from feedback_loop_dagster.lib.registry.edges import add_edge
from feedback_loop_dagster.lib.registry.versions import (
    ACTIVE,
    CANDIDATE,
    RegistryError,
    Version,
    get_label,
    get_version,
    list_versions,
    register_version,
    set_label,
)
from feedback_loop_dagster.lib.stats import Policy
from feedback_loop_dagster.lib.storage import tables

AB = "ab"
WATCH = "watch"
# After a promotion the replaced version keeps this share of traffic, so a regression of the
# new version shows up in a concurrent comparison rather than against stale history.
WATCH_HOLDBACK = 0.2


@dataclass(frozen=True)
class Experiment:
    id: int
    pattern_id: str
    kind: str
    control: Version
    treatment: Version
    proposal_id: int | None
    traffic_split: float
    policy: Policy
    start_window: date
    status: str
    concluded_window: date | None
    outcome: str | None
    reason: str | None


def _load(conn: Connection, row) -> Experiment:
    return Experiment(
        id=row["id"],
        pattern_id=row["pattern_id"],
        kind=row["kind"],
        control=get_version(conn, row["control_version_id"]),
        treatment=get_version(conn, row["treatment_version_id"]),
        proposal_id=row["proposal_id"],
        traffic_split=row["traffic_split"],
        policy=Policy.model_validate(json.loads(row["policy"])),
        start_window=row["start_window"],
        status=row["status"],
        concluded_window=row["concluded_window"],
        outcome=row["outcome"],
        reason=row["reason"],
    )


def get_experiment(conn: Connection, experiment_id: int) -> Experiment:
    row = conn.execute(sa.select(tables.experiments).where(tables.experiments.c.id == experiment_id)).mappings().first()
    if row is None:
        raise LookupError(f"no experiment with id {experiment_id}")
    return _load(conn, row)


def running_experiment(conn: Connection, pattern_id: str) -> Experiment | None:
    e = tables.experiments
    row = conn.execute(sa.select(e).where(e.c.pattern_id == pattern_id, e.c.status == "running")).mappings().first()
    return _load(conn, row) if row else None


def experiments_as_of(conn: Connection, pattern_id: str, window: date) -> list[Experiment]:
    """Experiments with evidence in `window`: started by then and not concluded before it."""
    e = tables.experiments
    rows = conn.execute(
        sa.select(e)
        .where(
            e.c.pattern_id == pattern_id,
            e.c.start_window <= window,
            sa.or_(e.c.concluded_window.is_(None), e.c.concluded_window >= window),
        )
        .order_by(e.c.id)
    ).mappings()
    return [_load(conn, r) for r in rows]


def list_experiments(conn: Connection, pattern_id: str | None = None) -> list[Experiment]:
    e = tables.experiments
    query = sa.select(e).order_by(e.c.id)
    if pattern_id is not None:
        query = query.where(e.c.pattern_id == pattern_id)
    return [_load(conn, r) for r in conn.execute(query).mappings()]


def latest_experiment_window(conn: Connection, pattern_id: str) -> date | None:
    """The newest window an experiment of the pattern started or ended in."""
    e = tables.experiments
    starts = conn.scalar(sa.select(sa.func.max(e.c.start_window)).where(e.c.pattern_id == pattern_id))
    ends = conn.scalar(sa.select(sa.func.max(e.c.concluded_window)).where(e.c.pattern_id == pattern_id))
    return max((d for d in (starts, ends) if d is not None), default=None)


def start_experiment(
    conn: Connection,
    pattern_id: str,
    control: Version,
    treatment: Version,
    policy: Policy,
    start_window: date,
    kind: str = AB,
    traffic_split: float | None = None,
    proposal_id: int | None = None,
    created_by: str = "feedback-loop",
) -> Experiment:
    if control.pattern_id != pattern_id or treatment.pattern_id != pattern_id:
        raise RegistryError("both arms of an experiment must be versions of its pattern")
    if control.id == treatment.id:
        raise RegistryError("an experiment needs two different versions")
    if running_experiment(conn, pattern_id) is not None:
        raise RegistryError(f"pattern {pattern_id!r} already has a running experiment")
    split = policy.traffic_split if traffic_split is None else traffic_split
    snapshot = policy.model_copy(update={"traffic_split": split})
    result = conn.execute(
        tables.experiments.insert().values(
            pattern_id=pattern_id,
            kind=kind,
            control_version_id=control.id,
            treatment_version_id=treatment.id,
            proposal_id=proposal_id,
            traffic_split=split,
            policy=snapshot.model_dump_json(),
            start_window=start_window,
            status="running",
            created_at=datetime.now(UTC),
            created_by=created_by,
        )
    )
    if kind == AB:
        set_label(conn, pattern_id, CANDIDATE, treatment.id, evidence_window=None)
    return get_experiment(conn, int(result.inserted_primary_key[0]))


def next_version_name(conn: Connection, pattern_id: str) -> str:
    taken = {v.version for v in list_versions(conn, pattern_id)}
    number = len(taken) + 1
    while f"v{number}" in taken:
        number += 1
    return f"v{number}"


def start_from_proposal(conn: Connection, pattern_id: str, window: date, policy: Policy) -> Experiment | None:
    """Turns the best open, patchable proposal into a candidate version and an A/B experiment.

    Experiments start at the next window so that both arms collect from the same moment, and
    never on a window older than the pattern's latest experiment (a backfill does not start
    experiments in the past).
    """
    if not policy.enable_ab_testing or running_experiment(conn, pattern_id) is not None:
        return None
    latest = latest_experiment_window(conn, pattern_id)
    if latest is not None and window < latest:
        return None
    active = get_label(conn, pattern_id, ACTIVE)
    if active is None:
        return None
    p = tables.proposals
    proposal = conn.execute(
        sa.select(p)
        .where(
            p.c.pattern_id == pattern_id,
            p.c.status == "open",
            p.c.patch.is_not(None),
            p.c.base_version_id == active.id,
            p.c.window_start <= window,
        )
        .order_by(p.c.priority.desc(), p.c.id)
    ).mappings().first()
    if proposal is None:
        return None
    candidate = register_version(
        conn,
        pattern_id,
        next_version_name(conn, pattern_id),
        merge_patch(active.config, json.loads(proposal["patch"])),
        parent_id=active.id,
        created_by=f"proposal:{proposal['id']}",
        source="proposal",
        proposal_id=proposal["id"],
    )
    add_edge(conn, candidate.id, active.id, "derived_from", {"proposal_id": proposal["id"], "title": proposal["title"]}, window_start=window)
    conn.execute(p.update().where(p.c.id == proposal["id"]).values(status="experimenting"))
    return start_experiment(
        conn, pattern_id, active, candidate, policy, window + timedelta(days=1), proposal_id=proposal["id"]
    )


def conclude_experiment(conn: Connection, experiment_id: int, window: date, outcome: str, reason: str) -> bool:
    """Running -> concluded, once: returns False when another transaction concluded it first."""
    e = tables.experiments
    done = conn.execute(
        e.update()
        .where(e.c.id == experiment_id, e.c.status == "running")
        .values(status="concluded", concluded_window=window, outcome=outcome, reason=reason)
    ).rowcount
    return done == 1
