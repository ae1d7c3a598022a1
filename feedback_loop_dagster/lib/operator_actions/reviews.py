"""A reviewer's verdict on a decision waiting for review (`feedback-loop approve` / `reject`) and
an operator's rollback of a promotion under watch (`feedback-loop rollback`)."""

from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.apply.decisions import Action, promote, reject, rollback
from feedback_loop_dagster.lib.clock import utc_today
from feedback_loop_dagster.lib.errors import NotFound
from feedback_loop_dagster.lib.experiment.experiments import Experiment, get_experiment
from feedback_loop_dagster.lib.registry.versions import RegistryError
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.vocabulary import DecisionStatus, ExperimentKind, ExperimentStatus


def pending_review(conn: Connection, decision_id: int) -> tuple[Experiment, dict[str, Any], date]:
    row = conn.execute(sa.select(tables.decisions).where(tables.decisions.c.id == decision_id)).mappings().first()
    if row is None:
        raise NotFound(f"no decision with id {decision_id}")
    if row["status"] != DecisionStatus.PENDING_REVIEW:
        raise RegistryError(f"decision {decision_id} is {row['status']}, not pending review")
    return get_experiment(conn, row["experiment_id"]), row["evidence"], row["window_start"]


def approve(conn: Connection, decision_id: int, reviewer: str) -> Action:
    experiment, evidence, window = pending_review(conn, decision_id)
    return promote(conn, experiment, window, evidence, decided_by=f"reviewer:{reviewer}", pending_decision_id=decision_id)


def dismiss(conn: Connection, decision_id: int, reviewer: str) -> Action:
    experiment, evidence, window = pending_review(conn, decision_id)
    return reject(conn, experiment, window, {**evidence, "reason": f"rejected by {reviewer}"}, decided_by=f"reviewer:{reviewer}")


def manual_rollback(conn: Connection, pattern_id: str, reason: str, user: str, today: date | None = None) -> Action:
    """`feedback-loop rollback PATTERN`: end the running watch by returning to the replaced version,
    decided in the window open `today` (default: the real clock's), never before the watch began."""
    e = tables.experiments
    watching = (e.c.pattern_id == pattern_id, e.c.status == ExperimentStatus.RUNNING, e.c.kind == ExperimentKind.WATCH)
    row = conn.execute(sa.select(e.c.id).where(*watching)).first()
    if row is None:
        raise RegistryError(f"pattern {pattern_id!r} has no promotion under watch to roll back")
    experiment = get_experiment(conn, row[0])
    window = max(today or utc_today(), experiment.start_window)
    return rollback(conn, experiment, window, {"reason": reason, "recommendation": "reject"}, decided_by=f"user:{user}")

