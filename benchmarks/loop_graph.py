"""Benchmark: the whole loop graph per partition, in-process, on SQLite and PostgreSQL.

(a) one partition with 10,000 executions in the window and one running experiment;
(b) one range run over 50 patterns x 7 days (the set-based path a backfill takes).

Prints seconds per partition next to the original design's budget (under 60 s for the whole
workflow). Aims (issue 12): under 1 s for the single partition, under 0.1 s per partition in the
range run.

Each case runs against three Dagster instances, because Dagster's own bookkeeping (a planned and a
materialisation event per asset and partition) is a large share of the time: an in-memory
instance (`DagsterInstance.ephemeral()`, what `materialize()` uses by default), a SQLite
instance on disk (what `make demo` uses) and a PostgreSQL instance (production's dagster.yaml).

    .venv/bin/python benchmarks/loop_graph.py [--backend sqlite|postgresql|both] [--per-day 200]
        [--instances in-memory,sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions, materialize_windows
from feedback_loop_dagster.lib.experiment.assignment import experiment_salt, in_treatment
from feedback_loop_dagster.lib.experiment.experiments import start_experiment
from feedback_loop_dagster.lib.registry.policies import set_policy
from feedback_loop_dagster.lib.registry.versions import ACTIVE, register_version, set_label
from feedback_loop_dagster.lib.stats import get_preset
from feedback_loop_dagster.lib.storage.database import dispose_engine, get_engine
from feedback_loop_dagster.lib.storage.migrations import init_databases
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster.simulator import SimulationConfig, simulate_rows, simulate_to_database, write_executions

warnings.filterwarnings("ignore")
ORIGINAL_BUDGET_S = 60.0
ADMIN_URL = os.environ.get("FEEDBACK_LOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
END = datetime.now(UTC).date()


def scratch_database(backend: str, folder: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{folder}/bench-{uuid.uuid4().hex[:8]}.db"
    name = f"fld_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    dispose_engine(url)
    if url.startswith("postgresql"):
        admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
        admin.dispose()


def loop_definitions(url: str) -> dg.Definitions:
    return build_definitions(FeedbackDatabases(database_url=url))


@contextlib.contextmanager
def postgres_instance():
    """A Dagster instance whose run and event storage is a scratch PostgreSQL database."""
    url = scratch_database("postgresql", "")
    parsed = make_url(url)
    database = {"hostname": parsed.host, "port": parsed.port or 5432, "db_name": parsed.database,
                "username": parsed.username, "password": parsed.password or "",
                "scheme": "postgresql+psycopg2"}  # as in dagster.yaml
    try:
        with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_db": database}}}) as instance:
            yield instance
    finally:
        drop_database(url)


INSTANCES = {"in-memory": dg.DagsterInstance.ephemeral, "sqlite": dg.instance_for_test, "postgresql": postgres_instance}


def single_partition(url: str, instance_kind: str) -> float:
    """10,000 executions in one window, routed 50/50 into a running experiment."""
    engine = get_engine(url)
    init_databases(engine, engine)
    window = END - timedelta(days=1)
    frame, _ = simulate_rows(
        SimulationConfig(patterns=1, days=1, per_day=10_000, seed=3, end_date=END, malformed_share=0.0, nasty_ids=False)
    )
    pattern_id = frame["pattern_id"].iloc[0]
    key = register_pattern_ids(engine, [pattern_id])[pattern_id]
    with engine.begin() as conn:
        policy = get_preset("production", feedback_type="reliability")
        set_policy(conn, pattern_id, policy)
        v1 = register_version(conn, pattern_id, "v1", {"timeout_ms": 5000})
        set_label(conn, pattern_id, ACTIVE, v1.id, None)
        v2 = register_version(conn, pattern_id, "v2", {"timeout_ms": 10000}, parent_id=v1.id)
        experiment = start_experiment(conn, pattern_id, v1, v2, policy, window)
    treated = in_treatment(experiment_salt(pattern_id, experiment.id), frame["unit_id"].fillna(frame["execution_id"]), 0.5)
    frame["pattern_version"] = ["v2" if t else "v1" for t in treated]
    write_executions(engine, frame)
    with INSTANCES[instance_kind]() as instance:
        add_pattern_partitions(instance, [key])
        defs = loop_definitions(url)
        materialize_windows(defs, instance, [key], window - timedelta(days=1), window - timedelta(days=1))  # warm-up: imports, caches
        started = time.perf_counter()
        materialize_windows(defs, instance, [key], window, window)
        return time.perf_counter() - started


def range_run(url: str, per_day: int, instance_kind: str) -> tuple[float, int]:
    engine = get_engine(url)
    init_databases(engine, engine)
    config = SimulationConfig(patterns=50, days=7, per_day=per_day, seed=5, end_date=END, nasty_ids=True)
    rows = simulate_to_database(engine, config)
    with engine.connect() as conn:
        pattern_ids = conn.scalars(sa.text("SELECT DISTINCT pattern_id FROM hook_executions")).all()
    keys = register_pattern_ids(engine, pattern_ids)
    with INSTANCES[instance_kind]() as instance:
        add_pattern_partitions(instance, sorted(keys.values()))
        started = time.perf_counter()
        runs = materialize_windows(loop_definitions(url), instance, sorted(keys.values()), END - timedelta(days=7), END - timedelta(days=1))
        elapsed = time.perf_counter() - started
    assert len(runs) == 1
    return elapsed, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--per-day", type=int, default=200, help="executions per pattern and day in the range run")
    parser.add_argument("--instances", default=",".join(INSTANCES), help="Dagster instance kinds, comma-separated")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    kinds = [k for k in args.instances.split(",") if k]
    unknown = set(kinds) - set(INSTANCES)
    if unknown:
        parser.error(f"unknown instance kind(s) {sorted(unknown)}: choose from {', '.join(INSTANCES)}")
    print(f"original design's budget: under {ORIGINAL_BUDGET_S:.0f} s for the whole workflow of one pattern")
    lines = [f"{'warehouse':<11} {'instance':<10} {'case':<38} {'seconds':>8} {'s/partition':>12} {'vs budget':>10}  aim"]
    with tempfile.TemporaryDirectory() as folder:
        # The first A/B look, plot and lineage picture of a process import and initialise their
        # libraries (a code server or run worker pays that once): one untimed case first.
        url = scratch_database("sqlite", folder)
        try:
            single_partition(url, "in-memory")
        finally:
            drop_database(url)
        for backend in backends:
            for kind in kinds:
                url = scratch_database(backend, folder)
                try:
                    seconds = single_partition(url, kind)
                finally:
                    drop_database(url)
                lines.append(
                    f"{backend:<11} {kind:<10} {'1 partition, 10,000 executions, 1 exp.':<38} {seconds:>8.2f} "
                    f"{seconds:>12.3f} {ORIGINAL_BUDGET_S / seconds:>9.0f}x  <1 s: {'ok' if seconds < 1 else 'MISSED'}"
                )
                url = scratch_database(backend, folder)
                try:
                    seconds, rows = range_run(url, args.per_day, kind)
                finally:
                    drop_database(url)
                per = seconds / 350
                lines.append(
                    f"{backend:<11} {kind:<10} {f'range run 50 x 7 ({rows:,} executions)':<38} {seconds:>8.2f} "
                    f"{per:>12.3f} {ORIGINAL_BUDGET_S / per:>9.0f}x  <0.1 s: {'ok' if per < 0.1 else 'MISSED'}"
                )
    print("\n".join(lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
