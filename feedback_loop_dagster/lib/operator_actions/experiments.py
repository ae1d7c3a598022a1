"""Starting an A/B experiment by hand (`feedback-loop experiments start`)."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.clock import utc_today
from feedback_loop_dagster.lib.errors import InvalidInput
from feedback_loop_dagster.lib.experiment.experiments import Experiment, start_experiment
from feedback_loop_dagster.lib.operator_actions.versions import resolve_version
from feedback_loop_dagster.lib.registry.policies import get_policy
from feedback_loop_dagster.lib.registry.versions import ACTIVE, RegistryError, get_label


def start_manual_experiment(
    conn: Connection,
    pattern_id: str,
    treatment: str,
    user: str,
    traffic_split: float | None = None,
    start_window: date | None = None,
) -> Experiment:
    """An A/B experiment of `treatment` against the active version under the pattern's policy,
    from `start_window` (default: tomorrow, so both arms collect from the same moment)."""
    control = get_label(conn, pattern_id, ACTIVE)
    if control is None:
        raise RegistryError(f"pattern {pattern_id!r} has no active version to compare with")
    version = resolve_version(conn, pattern_id, treatment)
    if traffic_split is not None and not 0.0 < traffic_split < 1.0:
        raise InvalidInput(f"traffic split must be between 0 and 1 (exclusive), got {traffic_split}")
    return start_experiment(
        conn,
        pattern_id,
        control=control,
        treatment=version,
        policy=get_policy(conn, pattern_id),
        start_window=start_window or utc_today() + timedelta(days=1),
        traffic_split=traffic_split,
        created_by=f"user:{user}",
    )
