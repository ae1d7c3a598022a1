"""Registry states built directly, so decision paths are tested without simulating traffic."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np

from feedback_loop_dagster.lib.registry.policies import set_policy
from feedback_loop_dagster.lib.registry.versions import ACTIVE, register_version, set_label
from feedback_loop_dagster.lib.stats import Policy, get_preset
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids

START = date(2026, 3, 2)
PATTERN = "code-review"


def pattern_with_candidate(engine, policy: Policy | None = None, pattern_id: str = PATTERN):
    """v1 active, v2 derived from it, an A/B experiment from START; returns (v1, v2, experiment)."""
    from feedback_loop_dagster.lib.experiment.experiments import start_experiment
    from feedback_loop_dagster.lib.registry.edges import add_edge

    policy = policy or get_preset("development", feedback_type="reliability", min_sample_size=50)
    register_pattern_ids(engine, [pattern_id])
    with engine.begin() as conn:
        v1 = register_version(conn, pattern_id, "v1", {"timeout_ms": 1000}, source="manual")
        set_label(conn, pattern_id, ACTIVE, v1.id, evidence_window=None)
        v2 = register_version(conn, pattern_id, "v2", {"timeout_ms": 2000}, parent_id=v1.id, source="proposal")
        add_edge(conn, v2.id, v1.id, "derived_from")
        set_policy(conn, pattern_id, policy)
        experiment = start_experiment(conn, pattern_id, v1, v2, policy, START)
    return v1, v2, experiment


def add_day(engine, pattern_id: str, version: str, day: date, n: int, success_rate: float, seed: int = 0,
            latency_ms: float = 500.0) -> None:
    """One day of sufficient statistics for a version, drawn from the given truth."""
    rng = np.random.default_rng(seed)
    successes = int(rng.binomial(n, success_rate))
    log_latency = rng.normal(np.log(latency_ms), 0.5, n)
    quality = rng.beta(8, 2, n)
    with engine.begin() as conn:
        conn.execute(
            tables.daily_version_stats.insert().values(
                pattern_id=pattern_id,
                version=version,
                day=day,
                pattern_key=pattern_id,
                executions=n,
                success_n=n,
                success_count=successes,
                latency_n=n,
                latency_log_sum=float(log_latency.sum()),
                latency_log_sum_sq=float((log_latency**2).sum()),
                quality_n=n,
                quality_sum=float(quality.sum()),
                quality_sum_sq=float((quality**2).sum()),
                rating_n=0,
                rating_sum=0.0,
                rating_sum_sq=0.0,
                retries_n=n,
                retries_sum=0.0,
                retries_sum_sq=0.0,
                error_counts={},
            )
        )


def add_days(engine, experiment, days: int, n_control: int, n_treatment: int, control_rate: float,
             treatment_rate: float, first: date | None = None) -> date:
    """Adds `days` days to both arms from `first` (default: the experiment's start); returns the last day."""
    first = first or experiment.start_window
    for i in range(days):
        day = first + timedelta(days=i)
        add_day(engine, experiment.pattern_id, experiment.control.version, day, n_control, control_rate, seed=2 * i)
        add_day(engine, experiment.pattern_id, experiment.treatment.version, day, n_treatment, treatment_rate, seed=2 * i + 1)
    return first + timedelta(days=days - 1)


def stored_look(conn, experiment, window, metric: str, effect: float, performance_delta: float) -> dict:
    """The A/B engine's stored look at `window`, with the lead metric's result."""
    result = {"decision": "apply", "recommendation": "apply", "reason": f"{metric} better", "p_value": 0.001,
              "confidence_score": 0.999, "performance_delta": performance_delta, "lead_metric": metric,
              "metrics": {metric: {"metric": metric, "effect": effect, "ci_lower": effect / 2, "ci_upper": effect * 1.5,
                                   "n_control": 500, "n_treatment": 500}}}
    conn.execute(tables.ab_results.insert().values(
        experiment_id=experiment.id, window_start=window, pattern_id=experiment.pattern_id, decision="apply",
        reason=result["reason"], p_value=0.001, confidence_score=0.999, performance_delta=performance_delta,
        control_n=500, treatment_n=500, srm_p_value=0.5, result=result, computed_at=datetime.now(UTC)))
    return result


def registered_versions(conn, pattern_id: str, count: int):
    """v1 (active) and v2..v<count> derived from it."""
    v1 = register_version(conn, pattern_id, "v1", {"n": 1}, source="manual")
    set_label(conn, pattern_id, ACTIVE, v1.id, None)
    return [v1] + [register_version(conn, pattern_id, f"v{i}", {"n": i}, parent_id=v1.id, source="proposal")
                   for i in range(2, count + 1)]
