"""Runs launched in-process (CLI, demo, Python API): runs of the code location, no compute-log
mirroring, nothing left behind under a parent that ignores SIGTERM, and marked failed when their
process dies; the range-run rectangles of the sensor, and how big one range run gets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG
from dagster._core.workspace.load import location_origins_from_yaml_paths

from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.partitions import partition_key, patterns_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.collect.assets import feedback_dataset, hook_executions
from feedback_loop_dagster.defs.in_process_runs.run_workers import (
    RUN_WORKER_TAG,
    RunWorker,
    RunWorkerAwareLauncher,
    fail_dead_runs,
)
from feedback_loop_dagster.defs.in_process_runs.runs import (
    CODE_LOCATION,
    CODE_LOCATION_MODULE,
    MAX_PARTITIONS_PER_RUN,
    PATTERNS_PER_RUN,
    add_pattern_partitions,
    code_location_origins,
    materialize_windows,
    partition_rectangles,
    range_run_tags,
    run_rectangles,
    window_ranges,
)
from feedback_loop_dagster.lib.storage.database import get_engine
from feedback_loop_dagster.lib.storage.migrations import init_databases
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster_tests.conftest import create_postgres_database, drop_postgres_database
from feedback_loop_dagster_tests.factories import execution, insert_executions
from feedback_loop_dagster_tests.processes import (
    CEILING_SECONDS,
    descendants,
    ignoring_sigterm,
    session_processes,
    start_blocking_run,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 3, 2)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def _collect_one_day(instance, url, engine):
    insert_executions(engine, [execution(day=DAY, minute=m) for m in range(0, 600, 60)])
    keys = register_pattern_ids(engine, ["code-review"])
    instance.add_dynamic_partitions(patterns_partitions.name, list(keys.values()))
    (result,) = materialize_windows(
        build_definitions(FeedbackDatabases(database_url=url)), instance, list(keys.values()), DAY, DAY,
        asset_selection=[dg.AssetKey("feedback_dataset")],
    )
    return instance.get_run_by_id(result.run_id)


def test_an_in_process_run_is_a_run_of_the_code_location(instance, engine, migrated_url):
    run = _collect_one_day(instance, migrated_url, engine)
    assert run.status == dg.DagsterRunStatus.SUCCESS

    # The origin is the one workspace.yaml gives the webserver and the daemon...
    (workspace_location,) = location_origins_from_yaml_paths([str(ROOT / "workspace.yaml")])
    origin = run.remote_job_origin
    assert origin.location_name == workspace_location.location_name == CODE_LOCATION
    assert origin.repository_origin.repository_name == "__repository__"
    assert origin.job_name == "feedback_loop_job"
    assert run.job_code_origin.repository_origin.code_pointer.module == CODE_LOCATION_MODULE
    # ... and the one pyproject.toml names for `dagster dev` / `dg dev`.
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    assert tool["dagster"]["code_location_name"] == tool["dg"]["project"]["code_location_name"] == CODE_LOCATION
    assert tool["dagster"]["module_name"] == tool["dg"]["project"]["code_location_target_module"] == CODE_LOCATION_MODULE

    # The job's Runs tab asks for the job's runs labelled with its repository: this one is there.
    label = f"__repository__@{CODE_LOCATION}"
    listed = instance.get_runs(dg.RunsFilter(job_name="feedback_loop_job", tags={REPOSITORY_LABEL_TAG: label}))
    assert [r.run_id for r in listed] == [run.run_id]
    # Its launcher sees the outcome; the daemon does not retry it behind their back.
    assert run.tags["dagster/max_retries"] == "0"
    assert RunWorker.from_tag(run.tags[RUN_WORKER_TAG]) == RunWorker.current()


def test_an_in_process_run_mirrors_no_compute_logs(instance, engine, migrated_url):
    # instance_for_test keeps Dagster's default: LocalComputeLogManager, which captures each run's
    # stdout/stderr into storage/<run id>/compute_logs/ and mirrors it back with `tail -F`.
    manager = instance.compute_log_manager
    assert type(manager).__name__ == "LocalComputeLogManager"
    run = _collect_one_day(instance, migrated_url, engine)
    assert not (Path(instance.root_directory) / "storage" / run.run_id / "compute_logs").exists()
    assert instance.compute_log_manager is manager  # the caller's instance is left as it was


@pytest.mark.postgres
def test_a_run_keeps_its_dagster_connections_open_on_a_postgresql_instance(engine, migrated_url):
    """A run worker's instance (here a plain `materialize`, as the daemon's run workers execute it)
    would open a PostgreSQL connection per query; the run's resource makes it keep them."""
    from sqlalchemy.pool import NullPool

    insert_executions(engine, [execution(day=DAY, minute=m) for m in range(0, 600, 60)])
    keys = register_pattern_ids(engine, ["code-review"])
    url = create_postgres_database()
    try:
        storage = {"postgres": {"postgres_url": url.replace("+psycopg", "+psycopg2")}}
        with dg.instance_for_test(overrides={"storage": storage}) as instance:
            add_pattern_partitions(instance, list(keys.values()))
            engines = lambda: [instance.event_log_storage._engine, instance.run_storage._engine]  # noqa: E731, SLF001
            assert all(isinstance(e.pool, NullPool) for e in engines())  # dagster-postgres' default
            result = dg.materialize(
                [hook_executions, feedback_dataset], selection=[feedback_dataset], instance=instance,
                partition_key=str(partition_key(keys["code-review"], DAY)),
                resources={"databases": FeedbackDatabases(database_url=migrated_url)},
            )
            assert result.success
            assert not any(isinstance(e.pool, NullPool) for e in engines())
    finally:
        drop_postgres_database(url)


def test_window_ranges_and_rectangles_cover_exactly_the_pending_partitions():
    d = [DAY + timedelta(days=k) for k in range(6)]
    assert window_ranges([d[3], d[0], d[1], d[5], d[1]]) == [(d[0], d[1]), (d[3], d[3]), (d[5], d[5])]
    order = ["a", "b", "c", "d", "e"]
    pending = [("a", d[0]), ("a", d[1]), ("b", d[0]), ("b", d[1]), ("c", d[1]), ("d", d[0]), ("d", d[1]), ("e", d[4])]
    rectangles = partition_rectangles(order, pending)
    assert rectangles == [
        (["a", "b"], d[0], d[1]),  # c lacks d[0], so it breaks the block
        (["d"], d[0], d[1]),
        (["c"], d[1], d[1]),
        (["e"], d[4], d[4]),
    ]
    covered = [(k, first + timedelta(days=i)) for keys, first, last in rectangles for k in keys
               for i in range((last - first).days + 1)]
    assert sorted(covered) == sorted(pending)  # each pending partition once, nothing else


def _partitions(rectangles) -> list[tuple[str, date]]:
    return [(k, first + timedelta(days=i)) for keys, first, last in rectangles for k in keys
            for i in range((last - first).days + 1)]


@pytest.mark.parametrize(("patterns", "days"), [(1, 1), (3, 90), (100, 90), (1_200, 3), (1, 2_500), (501, 7)])
def test_a_history_splits_into_runs_of_at_most_a_thousand_partitions_oldest_windows_first(patterns, days):
    keys = [f"p{i:04d}" for i in range(patterns)]
    last = DAY + timedelta(days=days - 1)
    rectangles = run_rectangles(keys, DAY, last)
    covered = _partitions(rectangles)
    assert sorted(covered) == sorted((k, DAY + timedelta(days=i)) for k in keys for i in range(days))
    assert len(covered) == len(set(covered))  # each partition once
    for block, first, end in rectangles:
        assert len(block) * ((end - first).days + 1) <= MAX_PARTITIONS_PER_RUN
        assert len(block) <= PATTERNS_PER_RUN
    firsts = [first for _, first, _ in rectangles]
    assert firsts == sorted(firsts)
    # no more runs than the cap needs: full blocks, as many windows per run as fit
    per_block = -(-days // max(1, MAX_PARTITIONS_PER_RUN // min(patterns, PATTERNS_PER_RUN)))
    assert len(rectangles) <= -(-patterns // PATTERNS_PER_RUN) * per_block
    if patterns * days <= MAX_PARTITIONS_PER_RUN:
        assert rectangles == [(keys, DAY, last)]  # small histories stay one run


def test_an_in_process_history_of_one_block_runs_in_window_order(instance, engine, migrated_url, monkeypatch):
    """materialize_windows splits by the same rule: three runs of one pattern, oldest first, each
    over its own windows."""
    import feedback_loop_dagster.defs.in_process_runs.runs as runs

    monkeypatch.setattr(runs, "MAX_PARTITIONS_PER_RUN", 2)
    days = [DAY + timedelta(days=i) for i in range(5)]
    insert_executions(engine, [execution(day=day, minute=m) for day in days for m in range(3)])
    keys = register_pattern_ids(engine, ["code-review"])
    instance.add_dynamic_partitions(patterns_partitions.name, list(keys.values()))
    results = materialize_windows(
        build_definitions(FeedbackDatabases(database_url=migrated_url)), instance, list(keys.values()), days[0], days[-1],
        asset_selection=[dg.AssetKey("feedback_dataset")],
    )
    assert [r.success for r in results] == [True, True, True]
    windows = [sorted(m.partition.split("|")[1] for m in r.asset_materializations_for_node("feedback_dataset"))
               for r in results]
    assert windows == [[str(days[0]), str(days[1])], [str(days[2]), str(days[3])], [str(days[4])]]


def test_dagster_writes_a_planned_check_row_per_partition_holding_the_whole_range(instance):
    """Why a range run has at most MAX_PARTITIONS_PER_RUN partitions: creating a run of N
    partitions writes, per partitioned check, N rows that each carry all N keys (O(N^2)). If a
    Dagster upgrade stores them compactly, this fails and the cap can grow."""
    keys = [f"p{i:02d}" for i in range(4)]
    add_pattern_partitions(instance, keys)
    job = build_definitions().resolve_job_def("feedback_loop_job")
    remote, python = code_location_origins(job.name)
    run = instance.create_run_for_job(job_def=job, run_config={}, tags=range_run_tags(keys, DAY, DAY + timedelta(days=2)),
                                      remote_job_origin=remote, job_code_origin=python)
    with instance.event_log_storage.index_connection() as conn:
        rows = conn.execute(sa.text(
            "SELECT check_name, partition, evaluation_event FROM asset_check_executions WHERE run_id = :run"
        ), {"run": run.run_id}).all()
    checks = {name for name, _, _ in rows}
    assert len(checks) == 2  # feedback_validity_share, sample_ratio_mismatch
    assert len(rows) == len(checks) * 12  # one per check and partition
    assert all(all(f"{k}|{DAY + timedelta(days=2)}" in event for k in keys) for _, _, event in rows)


# --- a run whose process died ------------------------------------------------------------------


def _killed_run(instance, home: Path, tmp_path: Path) -> dg.DagsterRun:
    """A run whose in-process worker (another process) is SIGKILLed inside its step."""
    proc, inside = start_blocking_run(home, tmp_path)
    try:
        wait_for(lambda: inside.exists() or proc.poll() is not None, "the run to be inside its step")
        assert proc.poll() is None, f"the run's process exited early ({proc.returncode})"
        (run,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert RunWorker.from_tag(run.tags[RUN_WORKER_TAG]).pid == proc.pid
        assert fail_dead_runs(instance) == []  # alive: left alone
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return run


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def dagster_home(request, tmp_path):
    """A DAGSTER_HOME of each kind: the embedded SQLite instance, and PostgreSQL storage as in
    the repository's dagster.yaml (no daemon here: the CLI on a machine without one)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    if request.param == "sqlite":
        yield home
        return
    url = create_postgres_database()
    (home / "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: {url.replace('+psycopg', '+psycopg2')}\n")
    yield home
    drop_postgres_database(url)


def test_a_run_whose_process_was_killed_is_marked_failed_by_the_next_launch(dagster_home, tmp_path):
    warehouse_url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = get_engine(warehouse_url)
    init_databases(engine, engine)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        run = _killed_run(instance, dagster_home, tmp_path)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # nobody noticed

        # The next in-process launch on this host (any CLI command that runs the loop) cleans up first.
        _collect_one_day(instance, warehouse_url, engine)
        dead = instance.get_run_by_id(run.run_id)
        assert dead.status == dg.DagsterRunStatus.FAILURE
        (failure,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert f"pid {RunWorker.from_tag(run.tags[RUN_WORKER_TAG]).pid}" in failure.dagster_event.message
        assert fail_dead_runs(instance) == []  # once


def test_the_launcher_reports_dead_live_and_foreign_workers_to_run_monitoring(instance):
    launcher = RunWorkerAwareLauncher()
    launcher.register_instance(instance)
    assert launcher.supports_check_run_worker_health
    me = RunWorker.current()
    assert RunWorker.from_tag(me.to_tag()) == me and me.to_tag() == f"pid {me.pid} on {me.host}"
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    job = dg.Definitions(assets=[_noop]).resolve_implicit_global_asset_job_def()

    def health(worker: RunWorker | None) -> WorkerStatus:
        run = instance.create_run_for_job(job, tags={RUN_WORKER_TAG: worker.to_tag()} if worker else {})
        return launcher.check_run_worker_health(run).status

    assert health(me) == WorkerStatus.RUNNING  # alive
    assert health(RunWorker(me.pid, "another-host")) == WorkerStatus.RUNNING  # cannot tell from here
    assert health(None) == WorkerStatus.RUNNING  # launched by the daemon: its code server watches it
    assert health(RunWorker(int(exited.stdout), me.host)) == WorkerStatus.FAILED  # gone
    # A pid that belongs to a process started after the run was created is not the run's worker.
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        run = instance.create_run_for_job(job, tags={RUN_WORKER_TAG: RunWorker(later.pid, me.host).to_tag()})
        created = instance.get_run_record_by_id(run.run_id).create_timestamp.timestamp()
        assert RunWorker(later.pid, me.host).is_alive(created) is True
        assert RunWorker(later.pid, me.host).is_alive(created - 3600) is False
    finally:
        later.kill()
        later.wait()


@dg.asset
def _noop():
    return None


# --- a parent that ignores SIGTERM ---------------------------------------------------------------


@pytest.mark.e2e
def test_the_cli_under_a_parent_ignoring_sigterm_starts_nothing_that_outlives_it(tmp_path):
    """Dagster's default compute-log capture started two `tail -F` per run and ended them with
    SIGTERM, then waited 30 s for each: under a parent that ignores SIGTERM each run took a minute
    longer and left the tails behind for good. In-process runs capture nothing now."""
    home = tmp_path / "dagster_home"  # no dagster.yaml: Dagster's defaults, LocalComputeLogManager included
    env = dict(os.environ, FEEDBACK_LOOP_DATABASE_URL=f"sqlite:///{tmp_path / 'warehouse.db'}", DAGSTER_HOME=str(home))
    cli = [sys.executable, "-m", "feedback_loop_dagster.cli"]
    for args in (["init-db"], ["simulate", "--patterns", "2", "--days", "3", "--per-day", "40", "--seed", "2"]):
        subprocess.run([*cli, *args], env=env, cwd=ROOT, check=True, capture_output=True, timeout=CEILING_SECONDS)

    backfill = subprocess.Popen(
        ignoring_sigterm([*cli, "backfill", "--start", "today-3", "--end", "yesterday", "--chunk-days", "1"]),
        env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    started: dict[int, str] = {}
    try:
        while backfill.poll() is None:
            started.update(descendants(backfill.pid))
            time.sleep(0.1)
        out, err = backfill.communicate()
        assert backfill.returncode == 0, err
        assert "in 3 run(s)" in out
        assert started == {}  # no tail, no watcher, nothing
        assert session_processes(backfill.pid) == []  # and nothing left in its session
    finally:
        for p in session_processes(backfill.pid):
            p.kill()

    # The CLI ran the code location's own job: its runs have the snapshot the UI loads.
    snapshot = subprocess.run(
        [sys.executable, "-c", "from feedback_loop_dagster.definitions import defs; "
         "print(defs().resolve_job_def('feedback_loop_job').get_job_snapshot_id())"],
        env=env, cwd=ROOT, check=True, capture_output=True, text=True, timeout=CEILING_SECONDS,
    ).stdout.split()[-1]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert {r.job_snapshot_id for r in runs} == {snapshot}
        # Nothing was captured, so there was nothing to mirror: the tails' cleanup, which waited 30 s
        # per ignored SIGTERM at the end of each run, had nothing to wait for.
        for run in runs:
            assert not (home / "storage" / run.run_id / "compute_logs").exists()
