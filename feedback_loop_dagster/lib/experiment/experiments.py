"""Experiments: candidate (treatment) against the active version (control), and the watch that
follows a promotion (the new active version against the one it replaced)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.clock import utc_now
from feedback_loop_dagster.lib.errors import NotFound
from feedback_loop_dagster.lib.registry.edges import add_edge
from feedback_loop_dagster.lib.registry.patch import merge_patch
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
from feedback_loop_dagster.lib.storage.vocabulary import DecisionStatus, ExperimentKind, ExperimentStatus

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
        policy=Policy.model_validate(row["policy"]),
        start_window=row["start_window"],
        status=row["status"],
        concluded_window=row["concluded_window"],
        outcome=row["outcome"],
        reason=row["reason"],
    )


def get_experiment(conn: Connection, experiment_id: int) -> Experiment:
    row = conn.execute(sa.select(tables.experiments).where(tables.experiments.c.id == experiment_id)).mappings().first()
    if row is None:
        raise NotFound(f"no experiment with id {experiment_id}")
    return _load(conn, row)


def running_experiment(conn: Connection, pattern_id: str) -> Experiment | None:
    e = tables.experiments
    row = conn.execute(sa.select(e).where(e.c.pattern_id == pattern_id, e.c.status == ExperimentStatus.RUNNING)).mappings().first()
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
    kind: ExperimentKind = ExperimentKind.AB,
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
            policy=snapshot,
            start_window=start_window,
            status=ExperimentStatus.RUNNING,
            created_at=datetime.now(UTC),
            created_by=created_by,
        )
    )
    if kind == ExperimentKind.AB:
        set_label(conn, pattern_id, CANDIDATE, treatment.id, evidence_window=None)
    return get_experiment(conn, int(result.inserted_primary_key[0]))


def next_version_name(conn: Connection, pattern_id: str) -> str:
    taken = {v.version for v in list_versions(conn, pattern_id)}
    number = len(taken) + 1
    while f"v{number}" in taken:
        number += 1
    return f"v{number}"


def open_window(now: datetime | None = None) -> date:
    """The daily window still open at `now` (default: the real clock): the UTC day containing it.

    Windows are UTC days and a window is complete once its day has ended, so every window
    before `open_window(now)` is complete at `now`. A naive `now` is taken to be UTC."""
    now = utc_now() if now is None else now
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    return now.date()


def experiment_start_window(window: date, now: datetime | None = None) -> date:
    """Where an experiment decided on `window` starts: the next window, but never a window that
    is already complete at `now` (then the window open at `now`).

    Executions of a complete window were logged without the experiment's split (all on the
    control version), so an experiment starting there would fail its sample-ratio check on
    every look and never decide. Running the loop over past windows (a backfill, a range run
    over history, re-materialising an old partition) therefore starts experiments in the
    present, while the loop run on the window that just closed starts them on the next one as
    before. Simulations that replay past days pass their simulated `now`."""
    return max(window + timedelta(days=1), open_window(now))


def start_from_proposal(
    conn: Connection, pattern_id: str, window: date, policy: Policy, now: datetime | None = None
) -> Experiment | None:
    """Turns the best open, patchable proposal into a candidate version and an A/B experiment.

    Experiments start at the next window so that both arms collect from the same moment, never
    on a window already complete at `now` (default: the real clock, UTC; see
    `experiment_start_window`) and never on a window older than the pattern's latest experiment
    (a backfill does not start experiments in the past).
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
        merge_patch(active.config, proposal["patch"]),
        parent_id=active.id,
        created_by=f"proposal:{proposal['id']}",
        source="proposal",
        proposal_id=proposal["id"],
    )
    origin = {"proposal_id": proposal["id"], "title": proposal["title"]}
    add_edge(conn, candidate.id, active.id, "derived_from", origin, window_start=window)
    conn.execute(p.update().where(p.c.id == proposal["id"]).values(status="experimenting"))
    return start_experiment(
        conn, pattern_id, active, candidate, policy, experiment_start_window(window, now), proposal_id=proposal["id"]
    )


def conclude_experiment(conn: Connection, experiment_id: int, window: date, outcome: str, reason: str) -> bool:
    """Running -> concluded, once: returns False when another transaction concluded it first."""
    e = tables.experiments
    done = conn.execute(
        e.update()
        .where(e.c.id == experiment_id, e.c.status == ExperimentStatus.RUNNING)
        .values(status=ExperimentStatus.CONCLUDED, concluded_window=window, outcome=outcome, reason=reason)
    ).rowcount
    return done == 1


def stop_experiment(conn: Connection, experiment_id: int, window: date, reason: str, user: str) -> Experiment:
    """A person ends a running experiment without a verdict (`feedback-loop experiments stop`).

    The experiment becomes `stopped` as of `window`; an A/B candidate loses its `candidate` label,
    a review waiting on it is dismissed, and the proposal it came from is marked `stopped` so the
    loop does not start the same experiment again. The active version does not change.
    """
    experiment = get_experiment(conn, experiment_id)
    e = tables.experiments
    done = conn.execute(
        e.update()
        .where(e.c.id == experiment_id, e.c.status == ExperimentStatus.RUNNING)
        .values(status=ExperimentStatus.STOPPED, concluded_window=window, outcome="stopped", reason=f"stopped by {user}: {reason}")
    ).rowcount
    if done != 1:
        raise RegistryError(
            f"experiment {experiment_id} is {experiment.status}"
            + (f" ({experiment.outcome})" if experiment.outcome else "")
            + ", not running"
        )
    if experiment.kind == ExperimentKind.AB:
        labels = tables.pattern_labels
        conn.execute(
            labels.delete().where(
                labels.c.pattern_id == experiment.pattern_id,
                labels.c.label == CANDIDATE,
                labels.c.version_id == experiment.treatment.id,
            )
        )
    d = tables.decisions
    conn.execute(
        d.update()
        .where(d.c.experiment_id == experiment_id, d.c.status == DecisionStatus.PENDING_REVIEW)
        .values(status=DecisionStatus.DISMISSED, decided_by=f"user:{user}")
    )
    if experiment.proposal_id is not None:
        p = tables.proposals
        conn.execute(p.update().where(p.c.id == experiment.proposal_id, p.c.status == "experimenting").values(status="stopped"))
    return get_experiment(conn, experiment_id)
