"""The engine's result for an experiment on its cumulative data up to a window."""

from __future__ import annotations

from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.analyze.period import period_stats
from feedback_loop_dagster.lib.experiment.experiments import Experiment
from feedback_loop_dagster.lib.stats import ExperimentResult, evaluate_experiment
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.upserts import upsert


def evaluate_as_of(conn: Connection, experiment: Experiment, window: date) -> ExperimentResult:
    """Evaluates and stores the result of `experiment` on its data from its start to `window`.

    The previous stored look (the latest window before this one) feeds the always-valid test,
    so p-values stay monotone and confidence sequences are intersected across looks.
    """
    control = period_stats(conn, experiment.pattern_id, experiment.control.version, experiment.start_window, window)
    treatment = period_stats(conn, experiment.pattern_id, experiment.treatment.version, experiment.start_window, window)
    ab = tables.ab_results
    previous = conn.scalar(
        sa.select(ab.c.result)
        .where(ab.c.experiment_id == experiment.id, ab.c.window_start < window)
        .order_by(ab.c.window_start.desc())
        .limit(1)
    )
    result = evaluate_experiment(
        control,
        treatment,
        experiment.policy,
        previous=previous["state"] if previous is not None else None,
        days_run=(window - experiment.start_window).days + 1,
    )
    upsert(
        conn,
        ab,
        [
            {
                "experiment_id": experiment.id,
                "window_start": window,
                "pattern_id": experiment.pattern_id,
                "decision": result.recommendation,
                "reason": result.reason,
                "p_value": result.p_value,
                "confidence_score": result.confidence_score,
                "performance_delta": result.performance_delta,
                "control_n": result.n_control,
                "treatment_n": result.n_treatment,
                "srm_p_value": result.srm_p_value,
                "result": result.to_dict(),
                "computed_at": datetime.now(UTC),
            }
        ],
        ["experiment_id", "window_start"],
    )
    return result


def stored_results(conn: Connection, experiment_id: int, until: date) -> list[dict]:
    """Every stored look of an experiment up to `until`, oldest first (for the lift plot)."""
    ab = tables.ab_results
    rows = conn.execute(
        sa.select(ab.c.window_start, ab.c.result)
        .where(ab.c.experiment_id == experiment_id, ab.c.window_start <= until)
        .order_by(ab.c.window_start)
    ).all()
    return [{"window": w, **r} for w, r in rows]


def stored_result(conn: Connection, experiment_id: int, window: date) -> ExperimentResult | None:
    """The look `evaluate_as_of` stored for `window`, or None."""
    ab = tables.ab_results
    stored = conn.scalar(sa.select(ab.c.result).where(ab.c.experiment_id == experiment_id, ab.c.window_start == window))
    return ExperimentResult.from_dict(stored) if stored is not None else None
