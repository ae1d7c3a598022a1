"""Reading back what the loop's assets wrote for one pattern over [first, window].

Nothing here computes a statistic: every number comes from the tables the assets filled
(feedback_partitions, pattern_metrics, proposals, ab_results, decisions, experiments), so the
Python API and `feedback-loop run` report exactly what the Dagster UI shows.

Field meanings (all over the windows [first, window]):

- feedback_collected: rows read from hook_executions (valid + quarantined);
- executions_analyzed: valid executions (after quarantine) the analysis used;
- improvements_identified: proposals open or seen again in the span;
- improvements_validated: A/B experiments whose result in the span says `apply`
  (a significant improvement of the primary metric, under the policy's thresholds);
- improvements_applied: promotions done in the span (policy or approved review);
- improvements_rejected: rejections and rollbacks decided in the span;
- performance_delta, confidence_score, p_value, statistically_significant: the latest A/B look
  of the span (0.0 / 0.0 / None / False without one);
- baseline_metrics / improved_metrics: that experiment's control / treatment over the analysis
  period ending at `window`; without an experiment, the active version's and nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.registry.versions import ACTIVE, get_label, get_version
from feedback_loop_dagster.lib.report.experiment import lead_effect
from feedback_loop_dagster.lib.stats.units import format_in_unit, improvement_in_unit
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.vocabulary import DecisionAction, DecisionStatus, ExperimentKind, ExperimentStatus

OUTCOME_METRIC_COLUMNS = ("executions", "success_rate", "latency_p50", "latency_p95", "latency_p99", "latency_geomean",
                 "quality_mean", "rating_mean", "retries_mean")


class LoopReport(BaseModel):
    """The figures of the original output contract over [first, window] (meanings: module doc).
    The output model, `contracts.ModelFeedbackLoopOutput`, is this plus the run's own fields."""

    feedback_collected: int = 0
    executions_analyzed: int = 0
    improvements_identified: int = 0
    improvement_opportunities: list[dict[str, Any]] = Field(default_factory=list)
    improvements_validated: int = 0
    validation_results: list[dict[str, Any]] = Field(default_factory=list)
    improvements_applied: int = 0
    improvements_rejected: int = 0
    performance_delta: float = 0.0
    baseline_metrics: dict[str, float] = Field(default_factory=dict)
    improved_metrics: dict[str, float] = Field(default_factory=dict)
    confidence_score: float = Field(default=0.0, ge=0.0, le=1.0)
    p_value: float | None = None
    statistically_significant: bool = False
    next_review_date: datetime | None = None
    warnings: list[str] = Field(default_factory=list)


class LoopOutcome(LoopReport):
    """`loop_outcome`'s answer: the contract's figures, plus what the caller files elsewhere
    (the quarantined count, and `details` for the output's metadata)."""

    quarantined: int = 0
    details: dict[str, Any] = Field(default_factory=dict)


def collected_counts(conn: Connection, pattern_id: str, first: date, window: date) -> tuple[int, int, int]:
    """(source rows, valid rows, quarantined rows) collected for the pattern over [first, window]."""
    fp = tables.feedback_partitions
    row = conn.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(fp.c.source_rows), 0),
            sa.func.coalesce(sa.func.sum(fp.c.valid_rows), 0),
            sa.func.coalesce(sa.func.sum(fp.c.quarantined_rows), 0),
        ).where(fp.c.pattern_id == pattern_id, fp.c.window_start.between(first, window))
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


def _metrics(conn: Connection, pattern_id: str, window: date, version: str) -> dict[str, float]:
    m = tables.pattern_metrics
    row = conn.execute(
        sa.select(*(m.c[f] for f in OUTCOME_METRIC_COLUMNS)).where(
            m.c.pattern_id == pattern_id, m.c.window_start == window, m.c.version == version
        )
    ).mappings().first()
    return {k: float(v) for k, v in (row or {}).items() if v is not None}


def window_end(window: date) -> datetime:
    return datetime.combine(window + timedelta(days=1), time.min, UTC)


def loop_outcome(conn: Connection, pattern_id: str, first: date, window: date, time_window_days: int) -> LoopOutcome:
    out = LoopOutcome()
    source, valid, bad = collected_counts(conn, pattern_id, first, window)
    out.feedback_collected, out.executions_analyzed, out.quarantined = source, valid, bad

    p = tables.proposals
    proposals = conn.execute(
        sa.select(p.c.id, p.c.kind, p.c.title, p.c.metric, p.c.expected_delta, p.c.risk, p.c.status, p.c.patch)
        .where(p.c.pattern_id == pattern_id, p.c.window_start <= window, p.c.last_seen_window >= first)
        .order_by(p.c.priority.desc(), p.c.id)
    ).mappings().all()
    out.improvements_identified = len(proposals)
    out.improvement_opportunities = [
        {"id": r["id"], "type": r["kind"], "description": r["title"], "metric": r["metric"],
         "expected_delta": r["expected_delta"],
         "expected": format_in_unit(r["metric"], improvement_in_unit(r["metric"], r["expected_delta"])),
         "risk": r["risk"], "status": r["status"],
         "patch": r["patch"]}
        for r in proposals
    ]

    ab, x = tables.ab_results, tables.experiments
    looks = conn.execute(
        sa.select(ab.c.experiment_id, ab.c.window_start, ab.c.decision, ab.c.reason, ab.c.p_value,
                  ab.c.confidence_score, ab.c.performance_delta, ab.c.control_n, ab.c.treatment_n,
                  ab.c.srm_p_value, ab.c.result, x.c.kind, x.c.control_version_id, x.c.treatment_version_id)
        .select_from(ab.join(x, x.c.id == ab.c.experiment_id))
        .where(ab.c.pattern_id == pattern_id, ab.c.window_start.between(first, window))
        .order_by(ab.c.window_start, ab.c.experiment_id)
    ).mappings().all()
    out.improvements_validated = len({r["experiment_id"] for r in looks if r["kind"] == ExperimentKind.AB and r["decision"] == "apply"})
    latest_by_experiment = {r["experiment_id"]: r for r in looks}
    out.validation_results = [
        {"experiment_id": r["experiment_id"], "kind": r["kind"], "window": r["window_start"].isoformat(),
         "verdict": r["decision"], "reason": r["reason"], "p_value": r["p_value"],
         "confidence": r["confidence_score"], "performance_delta": r["performance_delta"],
         "effect": lead_effect(r["result"]),
         "n_control": r["control_n"], "n_treatment": r["treatment_n"], "srm_p_value": r["srm_p_value"]}
        for r in latest_by_experiment.values()
    ]

    d = tables.decisions
    decisions = conn.execute(
        sa.select(d.c.id, d.c.action, d.c.status).where(d.c.pattern_id == pattern_id, d.c.window_start.between(first, window))
    ).all()
    out.improvements_applied = sum(1 for _, action, status in decisions if action == DecisionAction.APPLY and status == DecisionStatus.DONE)
    out.improvements_rejected = sum(1 for _, action, _ in decisions if action in ("reject", "rollback"))
    pending = [i for i, action, status in decisions if status == DecisionStatus.PENDING_REVIEW]
    if pending:
        out.warnings.append(
            "waiting for review: " + ", ".join(f"`feedback-loop approve {i}` or `reject {i}`" for i in pending)
        )

    if looks:
        lead = looks[-1]
        out.performance_delta = float(lead["performance_delta"] or 0.0)
        out.p_value = float(lead["p_value"])
        out.confidence_score = min(1.0, max(0.0, float(lead["confidence_score"])))
        out.statistically_significant = bool(lead["result"].get("statistically_significant", False))
        control = get_version(conn, lead["control_version_id"])
        treatment = get_version(conn, lead["treatment_version_id"])
        out.baseline_metrics = _metrics(conn, pattern_id, window, control.version)
        out.improved_metrics = _metrics(conn, pattern_id, window, treatment.version)
        out.details["lead_experiment"] = {"id": lead["experiment_id"], "kind": lead["kind"],
                                          "control": control.version, "treatment": treatment.version}
        if lead["decision"] == "invalid":
            out.warnings.append(f"experiment #{lead['experiment_id']}: {lead['reason']}")
    active = get_label(conn, pattern_id, ACTIVE)
    out.details["active_version"] = active.version if active else None
    if not looks and active is not None:
        out.baseline_metrics = _metrics(conn, pattern_id, window, active.version)
    if bad and source and bad / source > 0.05:
        out.warnings.append(f"{bad} of {source} executions were quarantined as invalid ({bad / source:.1%})")

    running = conn.scalar(sa.select(x.c.id).where(x.c.pattern_id == pattern_id, x.c.status == ExperimentStatus.RUNNING).limit(1))
    # A running experiment is looked at again when the next window completes.
    out.next_review_date = window_end(window + timedelta(days=1)) if running else window_end(window + timedelta(days=time_window_days))
    out.details["running_experiment"] = running
    return out

