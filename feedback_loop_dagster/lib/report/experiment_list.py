"""Experiments at a glance (`feedback-loop experiments list`): each experiment with its arms, its
latest look (verdict, the lead metric's effect in its unit with its interval, p-value, arm sizes)
and its decision, if any (one waiting for review is approved or rejected by its id)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.report.experiment import lead_effect
from feedback_loop_dagster.lib.storage import tables as t

ALL = "all"


def experiment_rows(conn: Connection, pattern_id: str | None = None, status: str = ALL) -> list[dict]:
    """One row per experiment (of `pattern_id`, with `status`; default every one), ordered by id."""
    x, v = t.experiments, t.pattern_versions
    control, treatment = v.alias("control"), v.alias("treatment")
    query = (
        sa.select(x.c.id, x.c.pattern_id, x.c.kind, control.c.version.label("control"), treatment.c.version.label("treatment"),
                  x.c.traffic_split, x.c.start_window, x.c.status, x.c.outcome, x.c.concluded_window, x.c.created_by)
        .join(control, control.c.id == x.c.control_version_id)
        .join(treatment, treatment.c.id == x.c.treatment_version_id)
        .order_by(x.c.id)
    )
    if pattern_id is not None:
        query = query.where(x.c.pattern_id == pattern_id)
    if status != ALL:
        query = query.where(x.c.status == status)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    ids = [r["id"] for r in rows]
    latest, decisions = (_latest_looks(conn, ids), _decisions(conn, ids)) if ids else ({}, {})
    for r in rows:
        look = latest.get(r["id"])
        r["start_window"] = r["start_window"].isoformat()
        r["concluded_window"] = r["concluded_window"].isoformat() if r["concluded_window"] else None
        r["last_look"] = look["window_start"].isoformat() if look else None
        r["verdict"] = look["decision"] if look else None
        r["p_value"] = look["p_value"] if look else None
        r["effect"] = lead_effect(look["result"]) if look else None
        r["performance_delta"] = look["performance_delta"] if look else None  # the seed contract's field
        r["n"] = f"{look['control_n']}/{look['treatment_n']}" if look else None
        decision = decisions.get(r["id"])
        r["decision"] = f"#{decision[0]} {decision[1]} {decision[2]}" if decision else None
    return rows


def _latest_looks(conn: Connection, ids: list[int]) -> dict[int, dict]:
    ab = t.ab_results
    newest = sa.select(ab.c.experiment_id, sa.func.max(ab.c.window_start).label("w")).where(
        ab.c.experiment_id.in_(ids)).group_by(ab.c.experiment_id).subquery()
    looks = conn.execute(
        sa.select(ab.c.experiment_id, ab.c.window_start, ab.c.decision, ab.c.p_value, ab.c.performance_delta,
                  ab.c.control_n, ab.c.treatment_n, ab.c.result)
        .join(newest, sa.and_(newest.c.experiment_id == ab.c.experiment_id, newest.c.w == ab.c.window_start))
    ).mappings()
    return {r["experiment_id"]: r for r in looks}


def _decisions(conn: Connection, ids: list[int]) -> dict[int, tuple]:
    d = t.decisions
    return {e: (i, a, s) for i, e, a, s in conn.execute(
        sa.select(d.c.id, d.c.experiment_id, d.c.action, d.c.status).where(d.c.experiment_id.in_(ids)))}
