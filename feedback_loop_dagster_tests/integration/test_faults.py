"""Faults while the daemon runs: PostgreSQL restarted, a run worker killed, the source table locked,
the process of an in-process (CLI) run killed.

These run against a private PostgreSQL server started for the module (same binaries as the
machine's cluster, its own data folder and port), so restarting it cuts no other test's connections;
it is stopped and removed at the end, and brought back up after each restart even when a test fails.
The daemon runs with the repository's dagster.yaml (run retries, run monitoring, polling every
second here instead of every 60 s) and its loops coming round every second, the sensor on from the
start (FEEDBACK_LOOP_SENSOR_DEFAULT_STATUS=running), ticking every second, with a 1.5 s source timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import psutil
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

from feedback_loop_dagster.defs.in_process_runs.run_workers import RUN_WORKER_TAG, RunWorker
from feedback_loop_dagster.lib.storage.database import dispose_engine, get_engine
from feedback_loop_dagster.lib.storage.tables import feedback, hook_executions
from feedback_loop_dagster_tests.integration.data import (
    collected_rows,
    executions,
    insert,
    registry_problems,
    runs,
    source_rows,
)
from feedback_loop_dagster_tests.integration.harness import REPO, Deployment, PrivatePostgres
from feedback_loop_dagster_tests.processes import start_blocking_run

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

SOURCE_TIMEOUT_MS = 1500
PATTERN_TAG = "feedback_loop/pattern"


@pytest.fixture(scope="module")
def private_postgres():
    from feedback_loop_dagster_tests.conftest import postgres_admin_url

    postgres_admin_url()  # skips (or fails under CI) like every PostgreSQL test when there is none
    server = PrivatePostgres()
    try:
        server.start()
    except Exception as exc:  # pragma: no cover - reported, not hidden
        server.stop()
        pytest.fail(f"could not start a private PostgreSQL server: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def faulty(private_postgres, tmp_path_factory):
    monitoring = yaml.safe_load((REPO / "dagster.yaml").read_text())["run_monitoring"]
    with Deployment(
        tmp_path_factory.mktemp("faults"),
        private_postgres.admin_url,
        sensor_interval_seconds=1,
        daemon_loop_seconds=1,
        source_timeout_ms=SOURCE_TIMEOUT_MS,
        instance_overrides={"run_monitoring": {**monitoring, "poll_interval_seconds": 1}},
        extra_env={"FEEDBACK_LOOP_SENSOR_DEFAULT_STATUS": "running"},
    ) as d:
        d.start_daemon()
        yield d


def _settled(d: Deployment, pattern: str, expected_rows: int):
    """True once every source row of the pattern is collected and none of its runs is still going."""
    engine = get_engine(d.warehouse_url)
    pattern_runs = runs(d.instance, {PATTERN_TAG: pattern})
    busy = [r for r in pattern_runs if not r.is_finished]
    return not busy and collected_rows(engine, pattern) == expected_rows


def test_postgres_restart_while_the_daemon_runs_misses_no_execution(faulty, private_postgres):
    d = faulty
    engine = get_engine(d.warehouse_url)
    pattern = "fault-restart"
    window = datetime.now(UTC).date() - timedelta(days=2)
    insert(engine, executions(pattern, window, 20))
    d.wait_until(lambda: _settled(d, pattern, 20), what="the first batch to be collected")

    insert(engine, executions(pattern, window, 15, tag="before-restart"))
    try:
        private_postgres.restart()  # the daemon, its code server and any run lose every connection
    finally:
        if not private_postgres.is_ready():
            private_postgres.start_again()
    assert private_postgres.is_ready()
    dispose_engine(d.warehouse_url)  # this test process reconnects like the daemon must
    engine = get_engine(d.warehouse_url)
    insert(engine, executions(pattern, window + timedelta(days=1), 10, tag="after-restart"))

    d.wait_until(lambda: _settled(d, pattern, 45), what="every row to be collected after the restart")
    assert source_rows(engine, pattern) == collected_rows(engine, pattern) == 45
    assert d.processes["daemon"].poll() is None, "the daemon died with the database"
    assert registry_problems(engine) == []


def _kill_tree(pid: int) -> list[int]:
    root = psutil.Process(pid)
    victims = [root, *root.children(recursive=True)]
    for p in victims:
        os.kill(p.pid, signal.SIGKILL)
    return [p.pid for p in victims]


@contextlib.contextmanager
def _locked(d: Deployment, table: sa.Table, mode: str) -> Iterator[sa.Connection]:
    """A transaction of its own holding a `mode` lock on `table` until the block ends (committed then)."""
    locker = sa.create_engine(d.warehouse_url, poolclass=sa.pool.NullPool)
    try:
        with locker.begin() as conn:
            conn.execute(sa.text(f'LOCK TABLE "{table.name}" IN {mode} MODE'))
            yield conn
    finally:
        locker.dispose()


def _waiting_on_a_lock(d: Deployment, pid: int) -> bool:
    """True when a database connection of process `pid` waits for a lock in the warehouse."""
    ports = {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.laddr}
    query = sa.text(
        "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with get_engine(d.warehouse_url).connect() as conn:
        return bool(ports & set(conn.scalars(query)))


def test_run_killed_with_sigkill_is_retried_and_the_registry_stays_consistent(faulty):
    """The run's worker is killed in the middle of collecting its partition: its transaction waits
    there on a lock this test holds on the feedback table (reads go on, writes wait), so the kill
    lands inside the run however fast or slow the machine is."""
    d = faulty
    engine = get_engine(d.warehouse_url)
    pattern = "fault-kill"
    window = datetime.now(UTC).date() - timedelta(days=2)

    def run_inside_its_collection():
        for run in runs(d.instance, {PATTERN_TAG: pattern}):
            if run.status == dg.DagsterRunStatus.STARTED:
                pid = d.run_worker_pid(run.run_id)
                if pid and psutil.pid_exists(pid) and _waiting_on_a_lock(d, pid):
                    return run, pid
            if run.is_finished:
                pytest.fail(f"run {run.run_id} finished ({run.status}) before it could be killed")
        return None

    with _locked(d, feedback, "SHARE"):
        insert(engine, executions(pattern, window, 20))
        run, pid = d.wait_until(run_inside_its_collection, what="a run to be inside its collection, waiting on the lock")
        killed = _kill_tree(pid)
    assert killed

    def retried():
        original = d.instance.get_run_by_id(run.run_id)
        if original.status != dg.DagsterRunStatus.FAILURE:
            return None
        children = runs(d.instance, {"dagster/parent_run_id": run.run_id})
        return next((c for c in children if c.status == dg.DagsterRunStatus.SUCCESS), None)

    retry = d.wait_until(retried, what="the killed run to be marked failed and retried")
    assert retry.tags[PATTERN_TAG] == pattern
    d.wait_until(lambda: _settled(d, pattern, 20), what="the partition to be complete")
    assert collected_rows(engine, pattern, window) == source_rows(engine, pattern, window) == 20
    assert registry_problems(engine) == []


def _sensor_ticks(d: Deployment, since: float) -> list:
    ticks = []
    for state in d.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == "new_executions_sensor":
            ticks += [t for t in d.instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=200) if t.timestamp >= since]
    return sorted(ticks, key=lambda t: t.timestamp)


def test_locked_source_table_fails_ticks_fast_and_loses_nothing(faulty):
    d = faulty
    engine = get_engine(d.warehouse_url)
    pattern = "fault-lock"
    window = datetime.now(UTC).date() - timedelta(days=1)
    rows = executions(pattern, window, 25)

    started = time.time()
    with _locked(d, hook_executions, "ACCESS EXCLUSIVE") as conn:
        conn.execute(hook_executions.insert(), rows.to_dict(orient="records"))

        def failed_ticks():
            failed = [t for t in _sensor_ticks(d, started) if t.status == TickStatus.FAILURE and t.end_timestamp]
            return failed if len(failed) >= 2 else None

        failed = d.wait_until(failed_ticks, what="sensor ticks to time out on the lock")

    # Both ticks ended while the lock was still held (it is released only once they had), on the
    # statement timeout: they gave up on their own, they did not wait for the lock.
    for tick in failed:
        assert tick.error and "canceling statement due to statement timeout" in tick.error.to_string(), tick.error
    # The daemon kept ticking while the lock was held: the sensor was not stuck behind it.
    d.wait_until(lambda: _settled(d, pattern, 25), what="the rows to be collected after the lock")
    assert collected_rows(engine, pattern, window) == source_rows(engine, pattern, window) == 25


def test_an_in_process_run_whose_process_was_killed_is_failed_by_run_monitoring(faulty, tmp_path):
    """A CLI run on the deployment's instance whose process dies: nobody else will ever end it, so
    the daemon's run monitoring does, through the launcher's health check (defs/in_process_runs/run_workers.py)."""
    d = faulty
    proc, inside = start_blocking_run(d.home, tmp_path, env=dict(os.environ))  # the deployment's DAGSTER_PG_*
    try:
        d.wait_until(lambda: inside.exists() or proc.poll() is not None, what="the CLI-like run to be inside its step")
        assert proc.poll() is None, f"the run's process exited early ({proc.returncode})"
        mine = [r for r in d.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
                if RUN_WORKER_TAG in r.tags and RunWorker.from_tag(r.tags[RUN_WORKER_TAG]).pid == proc.pid]
        (run,) = mine
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    d.wait_until(lambda: d.instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE,
                 what="run monitoring to mark the run failed")
    (failure,) = d.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert f"pid {proc.pid}" in failure.dagster_event.message
