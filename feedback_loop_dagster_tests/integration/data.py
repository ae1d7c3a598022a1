"""Executions and expectations shared by the integration tests and benchmarks/deployment.py."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.writes import bulk_insert

_ids = itertools.count()


def executions(pattern_id: str, day: date, count: int, *, version: str | None = "v1", tag: str = "it") -> pd.DataFrame:
    """`count` valid, successful executions of a pattern spread over one UTC day."""
    start = datetime.combine(day, datetime.min.time(), UTC)
    rows = []
    for i in range(count):
        started = start + timedelta(seconds=(i * 86_399) // max(count, 1))
        rows.append(
            {
                "execution_id": f"{tag}-{pattern_id}-{day}-{next(_ids)}",
                "pattern_id": pattern_id,
                "pattern_version": version,
                "started_at": started,
                "completed_at": started + timedelta(milliseconds=300),
                "duration_ms": 300.0 + i % 50,
                "status": "success" if i % 10 else "failure",
                "quality_score": 0.8,
                "performance_score": 0.7,
                "retry_count": 0,
                "error_type": None if i % 10 else "ToolError",
                "unit_id": f"user-{i % 97}",
            }
        )
    return pd.DataFrame(rows)


def insert(engine: Engine, frame: pd.DataFrame) -> int:
    with engine.begin() as conn:
        bulk_insert(conn, tables.hook_executions, frame)
    return len(frame)


def source_rows(engine: Engine, pattern_id: str, day: date | None = None) -> int:
    he = tables.hook_executions
    query = sa.select(sa.func.count()).select_from(he).where(he.c.pattern_id == pattern_id)
    with engine.connect() as conn:
        rows = conn.execute(query).scalar_one() if day is None else None
        if day is not None:
            frame = pd.read_sql(sa.select(he.c.started_at).where(he.c.pattern_id == pattern_id), conn)
            started = pd.to_datetime(frame["started_at"], utc=True)
            rows = int((started.dt.date == day).sum())
    return int(rows)


def collected_rows(engine: Engine, pattern_id: str, day: date | None = None) -> int:
    """Valid + quarantined rows the loop has collected for the pattern (one window or all)."""
    fp = tables.feedback_partitions
    query = sa.select(sa.func.coalesce(sa.func.sum(fp.c.source_rows), 0)).where(fp.c.pattern_id == pattern_id)
    if day is not None:
        query = query.where(fp.c.window_start == day)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def loop_asset_keys(defs: dg.Definitions) -> set[str]:
    """Every asset the loop materialises: the code location's assets but the external source."""
    graph = defs.get_repository_def().asset_graph
    return {key.to_user_string() for key in graph.materializable_asset_keys}


def materialised(instance: dg.DagsterInstance, run_id: str) -> set[tuple[str, str]]:
    """(asset, partition) pairs a run materialised."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=100_000).records
    return {
        (r.event_log_entry.dagster_event.asset_key.to_user_string(), r.event_log_entry.dagster_event.partition)
        for r in records
    }


def runs(instance: dg.DagsterInstance, tags: dict[str, str] | None = None) -> list[dg.DagsterRun]:
    return [r.dagster_run for r in instance.get_run_records(dg.RunsFilter(tags=tags or {}))]


def registry_problems(engine: Engine) -> list[str]:
    """What would make the version registry inconsistent; empty when it is consistent."""
    checks = {
        "label pointing at another pattern's or a missing version": """
            SELECT l.pattern_id, l.label FROM pattern_labels l
            LEFT JOIN pattern_versions v ON v.id = l.version_id
            WHERE v.id IS NULL OR v.pattern_id <> l.pattern_id""",
        "pattern with versions but no active label": """
            SELECT DISTINCT v.pattern_id FROM pattern_versions v
            WHERE NOT EXISTS (SELECT 1 FROM pattern_labels l WHERE l.pattern_id = v.pattern_id AND l.label = 'active')""",
        "more than one running experiment for a pattern": """
            SELECT pattern_id FROM experiments WHERE status = 'running' GROUP BY pattern_id HAVING COUNT(*) > 1""",
        "more than one decision for an experiment": """
            SELECT experiment_id FROM decisions GROUP BY experiment_id HAVING COUNT(*) > 1""",
        "lineage edge between versions of different patterns": """
            SELECT e.id FROM lineage_edges e JOIN pattern_versions a ON a.id = e.from_version_id
            JOIN pattern_versions b ON b.id = e.to_version_id
            WHERE a.pattern_id <> e.pattern_id OR b.pattern_id <> e.pattern_id""",
        "collected partition whose counts do not add up": """
            SELECT pattern_key, window_start FROM feedback_partitions
            WHERE valid_rows + quarantined_rows <> source_rows""",
        "feedback rows not matching their partition's count": """
            SELECT p.pattern_key, p.window_start FROM feedback_partitions p
            LEFT JOIN (SELECT pattern_key, window_start, COUNT(*) AS n FROM feedback GROUP BY 1, 2) f
              ON f.pattern_key = p.pattern_key AND f.window_start = p.window_start
            WHERE COALESCE(f.n, 0) <> p.valid_rows""",
    }
    problems = []
    with engine.connect() as conn:
        for what, query in checks.items():
            found = conn.execute(sa.text(query)).all()
            if found:
                problems.append(f"{what}: {found[:5]}")
    return problems


def register_experiment_pattern(engine: Engine, pattern_id: str) -> None:
    """A pattern with version v1 (timeout 2000 ms, often too short) active, under the production
    policy: its first analysed window yields a proposal to raise the timeout and an A/B experiment."""
    from feedback_loop_dagster.lib.registry.policies import set_policy
    from feedback_loop_dagster.lib.registry.versions import register_version, set_label
    from feedback_loop_dagster.lib.stats import get_preset
    from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids

    register_pattern_ids(engine, [pattern_id])
    with engine.begin() as conn:
        v1 = register_version(conn, pattern_id, "v1", {"timeout_ms": 2000}, source="manual")
        set_label(conn, pattern_id, "active", v1.id, None)
        set_policy(conn, pattern_id, get_preset("production", feedback_type="reliability"))


def assigned_executions(engine: Engine, pattern_id: str, day: date, count: int, rng, tag: str = "hist") -> pd.DataFrame:
    """Executions whose units run the version the loop assigns them (the active one, or an arm of the
    running experiment), with timeouts that follow each version's `timeout_ms`."""
    from feedback_loop_dagster.lib.experiment.assignment import assign_variant
    from feedback_loop_dagster.lib.registry.versions import find_version

    configs: dict[str, dict] = {}
    rows = []
    for i in range(count):
        unit = f"u{rng.integers(5000)}"
        version = assign_variant(pattern_id, unit, engine)
        if version not in configs:
            with engine.connect() as conn:
                configs[version] = find_version(conn, pattern_id, version).config
        latency = float(rng.lognormal(np.log(900), 0.5))
        timeout = configs[version].get("timeout_ms", 2000)
        started = datetime.combine(day, datetime.min.time(), UTC) + timedelta(seconds=int(rng.integers(86_000)))
        if latency > timeout:
            status, duration, error = "timeout", float(timeout), "TimeoutError"
        elif rng.random() > 0.05:
            status, duration, error = "success", latency, None
        else:
            status, duration, error = "failure", latency, "ToolError"
        rows.append(
            {
                "execution_id": f"{tag}-{pattern_id}-{day}-{next(_ids)}",
                "pattern_id": pattern_id,
                "pattern_version": version,
                "started_at": started,
                "completed_at": started + timedelta(milliseconds=duration),
                "duration_ms": duration,
                "status": status,
                "quality_score": float(rng.beta(8, 2)),
                "retry_count": 0,
                "error_type": error,
                "unit_id": unit,
            }
        )
    return pd.DataFrame(rows)


def experiment_history(engine: Engine, pattern_id: str, first_day: date, days: int, per_day: int = 600, seed: int = 1) -> Iterable[date]:
    """Yields each day after writing its executions: a pattern whose timeouts a proposal fixes, so the
    loop opens an A/B experiment on the first day and has cumulative results from the second (when
    the caller materialises each day before asking for the next)."""
    register_experiment_pattern(engine, pattern_id)
    rng = np.random.default_rng(seed)
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        insert(engine, assigned_executions(engine, pattern_id, day, per_day, rng))
        yield day


def generate_executions(engine: Engine, patterns: list[str], first_day: date, days: int, per_day: int, tag: str) -> int:
    """patterns x days x per_day executions written by PostgreSQL itself (generate_series), for volume:
    about a million rows in seconds. Mostly successes, latencies log-normal, 2% failures."""
    total = len(patterns) * days * per_day
    query = sa.text(
        f"""
        INSERT INTO "{tables.hook_executions.name}"
          (execution_id, pattern_id, pattern_version, started_at, completed_at, duration_ms, status,
           quality_score, performance_score, retry_count, error_type, unit_id)
        SELECT :tag || '-' || i,
               (CAST(:patterns AS text[]))[1 + (i % :n_patterns)],
               'v1',
               ts, ts + make_interval(secs => d / 1000.0), d,
               CASE WHEN i % 50 = 0 THEN 'failure' ELSE 'success' END,
               0.6 + 0.4 * ((i * 7919) % 1000) / 1000.0,
               0.5,
               0,
               CASE WHEN i % 50 = 0 THEN 'ToolError' END,
               'u' || (i % 5000)
        FROM generate_series(CAST(0 AS bigint), CAST(:total AS bigint) - 1) AS i,
             LATERAL (SELECT CAST(:first AS timestamptz)
                        + make_interval(days => CAST((i / :n_patterns) / :per_day AS integer))
                        + make_interval(secs => ((i / :n_patterns) % :per_day) * 86000.0 / :per_day) AS ts,
                             200 + ((i * 104729) % 4000) AS d) AS x
        """
    )
    with engine.begin() as conn:
        conn.execute(
            query,
            {"tag": tag, "patterns": list(patterns), "n_patterns": len(patterns), "total": total,
             "first": f"{first_day.isoformat()}T00:00:00+00:00", "per_day": per_day},
        )
    return total
