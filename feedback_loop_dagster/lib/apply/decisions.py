"""Executing the engine's verdict under the experiment's policy, one transaction per change.

Every change starts with a compare-and-set on the experiment (running -> concluded) and on the
`active` label, so a repeated run, a backfill or a concurrent run for the same pattern acts at
most once, and a crash inside the transaction leaves the registry as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.experiment.experiments import (
    WATCH_HOLDBACK,
    Experiment,
    conclude_experiment,
    experiment_start_window,
    start_experiment,
)
from feedback_loop_dagster.lib.registry.edges import add_edge
from feedback_loop_dagster.lib.registry.versions import (
    ACTIVE,
    CANDIDATE,
    RegistryError,
    delete_label,
    label_evidence_window,
    move_label,
)
from feedback_loop_dagster.lib.stats import ExperimentResult
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.vocabulary import DecisionAction, DecisionStatus, ExperimentKind, ExperimentStatus

# How long a promoted version is watched against the one it replaced, in windows.
WATCH_WINDOWS = 7


@dataclass(frozen=True)
class Action:
    experiment_id: int
    pattern_id: str
    window: date
    action: str  # promoted | rejected | inconclusive | queued_for_review | rolled_back | confirmed | waiting | observed | none
    reason: str


# What a decision records of the look it was taken on (`decisions.evidence`, lineage edges).
EVIDENCE_FIELDS = ("decision", "recommendation", "reason", "p_value", "confidence_score", "performance_delta",
                   "statistically_significant", "n_control", "n_treatment", "srm_p_value", "lead_metric")


def _evidence(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result.get(k) for k in EVIDENCE_FIELDS}


def _decision(
    conn: Connection,
    experiment: Experiment,
    window: date,
    action: DecisionAction,
    status: DecisionStatus,
    reason: str,
    result: dict[str, Any],
    decided_by: str,
    from_version: int | None,
    to_version: int | None,
) -> int:
    row = conn.execute(
        tables.decisions.insert().values(
            experiment_id=experiment.id,
            pattern_id=experiment.pattern_id,
            window_start=window,
            action=action,
            status=status,
            from_version_id=from_version,
            to_version_id=to_version,
            reason=reason,
            evidence=_evidence(result),
            created_at=datetime.now(UTC),
            decided_by=decided_by,
        )
    )
    return int(row.inserted_primary_key[0])


def _set_proposal(conn: Connection, proposal_id: int | None, status: str) -> None:
    if proposal_id is not None:
        conn.execute(tables.proposals.update().where(tables.proposals.c.id == proposal_id).values(status=status))


def act_on_result(
    conn: Connection, experiment: Experiment, window: date, look: ExperimentResult, now: datetime | None = None
) -> Action:
    """What the loop does with the look at `window` of a running experiment (at `now`, default
    the real clock: a promotion's watch starts no earlier than the window open then)."""
    result = {name: getattr(look, name) for name in EVIDENCE_FIELDS}

    def action(name: str, reason: str) -> Action:
        return Action(experiment.id, experiment.pattern_id, window, name, reason)

    if experiment.status != ExperimentStatus.RUNNING:
        return action("none", f"experiment concluded in {experiment.concluded_window} ({experiment.outcome})")
    moved = label_evidence_window(conn, experiment.pattern_id, ACTIVE)
    if moved is not None and window < moved:
        return action("none", f"evidence of {window} is older than the last change of the active version ({moved})")
    verdict = look.recommendation
    policy = experiment.policy
    if experiment.kind == ExperimentKind.WATCH:
        # The watch's own rule: harm on any metric rolls back; no harm by its end confirms.
        if verdict == "reject":
            return rollback(conn, experiment, window, result, decided_by="policy")
        watched = (window - experiment.start_window).days + 1
        sampled = min(look.n_control, look.n_treatment) >= policy.min_sample_size
        if watched >= WATCH_WINDOWS and sampled and verdict != "invalid":
            if conclude_experiment(conn, experiment.id, window, "confirmed", look.reason):
                return action("confirmed", f"no regression after {watched} windows: {look.reason}")
        return action("waiting", look.reason)
    if verdict == "apply":
        if not policy.auto_apply and not policy.require_review:
            return action("observed", "policy never applies (monitoring): " + look.reason)
        if policy.require_review:
            return queue_for_review(conn, experiment, window, result)
        return promote(conn, experiment, window, result, decided_by="policy", now=now)
    if verdict == "reject":
        return reject(conn, experiment, window, result, decided_by="policy")
    if verdict == "inconclusive":
        return end_inconclusive(conn, experiment, window, result)
    return action("waiting", look.reason)


def queue_for_review(conn: Connection, experiment: Experiment, window: date, result: dict[str, Any]) -> Action:
    decision_id = conn.scalar(sa.select(tables.decisions.c.id).where(tables.decisions.c.experiment_id == experiment.id))
    if decision_id is None:
        decision_id = _decision(conn, experiment, window, DecisionAction.APPLY, DecisionStatus.PENDING_REVIEW, result["reason"], result,
                                "policy", experiment.control.id, experiment.treatment.id)
    return Action(experiment.id, experiment.pattern_id, window, "queued_for_review",
                  f"waiting for `feedback-loop approve {decision_id}`: {result['reason']}")


def promote(
    conn: Connection,
    experiment: Experiment,
    window: date,
    result: dict[str, Any],
    decided_by: str,
    pending_decision_id: int | None = None,
    now: datetime | None = None,
) -> Action:
    """Treatment becomes `active`; the replaced version is kept on a holdback and watched from
    the next window, or from the window open at `now` when that one is already complete (a
    backfill, a late approval): its traffic was never split for the watch."""
    if not conclude_experiment(conn, experiment.id, window, "promoted", result["reason"]):
        return Action(experiment.id, experiment.pattern_id, window, "none", "already decided by another run")
    if not move_label(conn, experiment.pattern_id, ACTIVE, experiment.control.id, experiment.treatment.id, window):
        raise RegistryError(
            f"active version of {experiment.pattern_id!r} is no longer {experiment.control.label}; not promoting"
        )
    delete_label(conn, experiment.pattern_id, CANDIDATE)
    if pending_decision_id is None:
        decision_id = _decision(conn, experiment, window, DecisionAction.APPLY, DecisionStatus.DONE, result["reason"], result, decided_by,
                                experiment.control.id, experiment.treatment.id)
    else:
        decision_id = pending_decision_id
        conn.execute(
            tables.decisions.update()
            .where(tables.decisions.c.id == pending_decision_id)
            .values(status=DecisionStatus.DONE, decided_by=decided_by)
        )
    add_edge(conn, experiment.treatment.id, experiment.control.id, "promoted_over",
             {**_evidence(result), "experiment_id": experiment.id}, decision_id=decision_id, window_start=window)
    _set_proposal(conn, experiment.proposal_id, "applied")
    start_experiment(
        conn,
        experiment.pattern_id,
        control=experiment.control,
        treatment=experiment.treatment,
        policy=experiment.policy,
        start_window=experiment_start_window(window, now),
        kind=ExperimentKind.WATCH,
        traffic_split=1.0 - WATCH_HOLDBACK,
        proposal_id=experiment.proposal_id,
        created_by=f"decision:{decision_id}",
    )
    return Action(experiment.id, experiment.pattern_id, window, "promoted", result["reason"])


def _close_without_promotion(conn: Connection, experiment: Experiment, window: date, result: dict[str, Any],
                             decided_by: str, outcome: str, decision_action: DecisionAction) -> Action:
    """Control stays active: the experiment concludes with `outcome` (compare-and-set), the
    candidate loses its label (it is archived), a review waiting on it is dismissed, and the
    proposal settles as `outcome`, so the same change is not tried again on this version."""
    if not conclude_experiment(conn, experiment.id, window, outcome, result["reason"]):
        return Action(experiment.id, experiment.pattern_id, window, "none", "already decided by another run")
    delete_label(conn, experiment.pattern_id, CANDIDATE)
    existing = conn.scalar(sa.select(tables.decisions.c.id).where(tables.decisions.c.experiment_id == experiment.id))
    if existing is None:
        _decision(conn, experiment, window, decision_action, DecisionStatus.DONE, result["reason"], result, decided_by,
                  experiment.control.id, experiment.treatment.id)
    else:
        conn.execute(tables.decisions.update().where(tables.decisions.c.id == existing)
                     .values(action=decision_action, status=DecisionStatus.DISMISSED, decided_by=decided_by))
    _set_proposal(conn, experiment.proposal_id, outcome)
    return Action(experiment.id, experiment.pattern_id, window, outcome, result["reason"])


def reject(conn: Connection, experiment: Experiment, window: date, result: dict[str, Any], decided_by: str) -> Action:
    return _close_without_promotion(conn, experiment, window, result, decided_by, "rejected", DecisionAction.REJECT)


def end_inconclusive(conn: Connection, experiment: Experiment, window: date, result: dict[str, Any]) -> Action:
    """The experiment's time or sample is up without a decision: keep the control version."""
    return _close_without_promotion(conn, experiment, window, result, "policy", "inconclusive", DecisionAction.KEEP)


def rollback(conn: Connection, experiment: Experiment, window: date, result: dict[str, Any], decided_by: str) -> Action:
    """The watched version regressed: `active` moves back to the version it replaced."""
    if not conclude_experiment(conn, experiment.id, window, "rolled_back", result["reason"]):
        return Action(experiment.id, experiment.pattern_id, window, "none", "already decided by another run")
    if not move_label(conn, experiment.pattern_id, ACTIVE, experiment.treatment.id, experiment.control.id, window):
        raise RegistryError(
            f"active version of {experiment.pattern_id!r} is no longer {experiment.treatment.label}; not rolling back"
        )
    decision_id = _decision(conn, experiment, window, DecisionAction.ROLLBACK, DecisionStatus.DONE, result["reason"], result, decided_by,
                            experiment.treatment.id, experiment.control.id)
    add_edge(conn, experiment.treatment.id, experiment.control.id, "rolled_back_to",
             {**_evidence(result), "experiment_id": experiment.id}, decision_id=decision_id, window_start=window)
    _set_proposal(conn, experiment.proposal_id, "rolled_back")
    return Action(experiment.id, experiment.pattern_id, window, "rolled_back", result["reason"])
