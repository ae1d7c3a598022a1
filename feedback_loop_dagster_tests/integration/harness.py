"""A real Dagster deployment on this machine: dagster-daemon and dagster-webserver over PostgreSQL.

Used by the integration tests and by benchmarks/deployment.py. Everything it starts leads its own
session, with SIGTERM and SIGINT at their default even when the caller ignores them, and is stopped
by pid: the session's processes (descendants, and orphans a dead parent left behind) get SIGTERM,
then SIGKILL, until none is left -- also when the caller fails. Closing the deployment, which throws
it away, SIGKILLs them at once.

Waits follow progress, not the clock: `wait_until` gives up when the deployment has made no progress
(no new event in the instance's event log: runs, steps, materialisations) for `stall` seconds, so a
loaded machine (2 cores at load average 20) slows a test down without failing it; `ceiling` only
guards against a hang.

    with Deployment(tmp_path, admin_url) as d:     # fresh instance and warehouse databases
        d.start_daemon(); d.start_webserver()
        d.start_sensor("new_executions_sensor")
        d.wait_until(lambda: ..., what="the run to finish")
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from feedback_loop_dagster_tests.processes import CEILING_SECONDS

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "feedback_loop_dagster"
REPOSITORY = "__repository__"
# A wait fails when the deployment made no progress for this long (a run worker's start on a
# machine at load average 20 is the slowest silent step seen: about 2 minutes)...
STALL_SECONDS = 300
# ... and in any case after CEILING_SECONDS, which only guards against a hang (as it does for every
# request to the webserver: a loaded machine answers late, not never).

# Run in every process the harness starts, before it execs the real command: a caller (a supervisor,
# a CI wrapper) may ignore SIGTERM, and an ignored signal stays ignored across exec. The daemon's
# run workers would then ignore the SIGTERM Dagster sends their compute-log `tail` processes (each
# run waits 30 s per tail and leaves them behind), and stopping the deployment would need SIGKILL.
DEFAULT_SIGNALS = (
    "import os, signal, sys; [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGTERM, signal.SIGINT)]; "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


# The assets of DESIGN.md section 1, in loop order, and the external source they read.
DESIGN_ASSETS = [
    "hook_executions",
    "feedback_dataset",
    "pattern_analysis",
    "improvement_proposals",
    "experiments",
    "ab_test_results",
    "applied_improvements",
    "pattern_lineage",
    "loop_health",
]

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_database(admin_url: str, prefix: str = "fld_it", durable_commits: bool = True) -> str:
    """A fresh database named `prefix`_<random>. Without `durable_commits` a commit does not wait for
    its WAL flush (synchronous_commit=off): a server crash may lose the last commits of this
    throwaway database, never its consistency, and a client's death loses nothing."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            if not durable_commits:
                conn.execute(sa.text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    finally:
        admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    from feedback_loop_dagster.lib.storage.database import dispose_engine

    dispose_engine(url)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    finally:
        admin.dispose()


def process_tree(pid: int) -> list[psutil.Process]:
    """The process, its descendants and, when it leads a session (everything this harness starts
    does), every process still in that session: orphans reparented to init included."""
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        found = {p.pid: p for p in (root, *root.children(recursive=True))}
    for p in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            if p.pid not in found and os.getsid(p.pid) == pid:
                found[p.pid] = p
    return list(found.values())


def stop_process_tree(proc: psutil.Process | subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the process tree (`process_tree`), SIGKILL whatever is left after `grace` s, and again
    for what started meanwhile, until nothing is left."""
    pid = proc.pid
    tree = process_tree(pid)
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    psutil.wait_procs(tree, timeout=grace)
    for _ in range(10):
        alive = process_tree(pid)
        if not alive:
            break
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
    if isinstance(proc, subprocess.Popen):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


class PrivatePostgres:
    """A throwaway PostgreSQL server of the machine's own version, for faults that must not touch
    the shared cluster (a restart would cut every other test's connections). Trust auth, 127.0.0.1."""

    def __init__(self):
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not versions:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = versions[-1].parent
        # Its own folder in /tmp: the server's user cannot enter root's private pytest folders.
        self.root = Path(tempfile.mkdtemp(prefix="fld-private-pg-"))
        self.data = self.root / "pgdata"
        self.port = free_port()
        self.log = self.root / "postgres.log"

    def _as_postgres(self, *args: str, timeout: float = CEILING_SECONDS) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # the server refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
        return result

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            self.log.touch()
            shutil.chown(self.log, "postgres")
        self._as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        self.start_again()

    def start_again(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c max_connections=200"
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", str(CEILING_SECONDS), "start")

    def restart(self) -> None:
        # -l: the new postmaster must not inherit our pipes, or waiting for pg_ctl never ends.
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "-t", str(CEILING_SECONDS), "restart")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError, RuntimeError):
                self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():  # pg_ctl failed: kill the postmaster we started, by its pid
            with contextlib.suppress(Exception):
                stop_process_tree(psutil.Process(int(pid_file.read_text().split()[0])), grace=5)
        shutil.rmtree(self.root, ignore_errors=True)

    def is_ready(self) -> bool:
        return subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"]).returncode == 0


class Deployment:
    """A temporary DAGSTER_HOME with the repository's dagster.yaml over fresh PostgreSQL databases
    (one for Dagster's storage, one for the warehouse and source), and the processes serving it.

    `daemon_loop_seconds` (tests): the daemon's backfill and sensor loops and its run queue come round
    that often instead of every 30, 5 and 5 s (quick_daemon.py); None keeps Dagster's own.
    `durable_commits=False` (tests that crash no server): see create_database."""

    def __init__(
        self,
        root: Path,
        admin_url: str,
        *,
        sensor_interval_seconds: int = 5,
        daemon_loop_seconds: int | None = None,
        durable_commits: bool = True,
        source_timeout_ms: int | None = None,
        start_date: str | None = None,
        instance_overrides: dict[str, Any] | None = None,
        extra_env: dict[str, str] | None = None,
    ):
        self.root = Path(root)
        self.admin_url = admin_url
        self.home = self.root / "dagster_home"
        self.logs = self.root / "logs"
        self.port = free_port()
        self.processes: dict[str, subprocess.Popen] = {}
        self._sensor_interval = sensor_interval_seconds
        self._daemon_loop = daemon_loop_seconds
        self._durable_commits = durable_commits
        self._source_timeout_ms = source_timeout_ms
        self._start_date = start_date
        self._overrides = instance_overrides or {}
        self._extra_env = extra_env or {}
        self._saved_env: dict[str, str | None] = {}
        self.instance_url = ""
        self.warehouse_url = ""

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Deployment:
        try:
            self._set_up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _set_up(self) -> None:
        from feedback_loop_dagster.lib.storage.database import get_engine
        from feedback_loop_dagster.lib.storage.migrations import init_databases

        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.instance_url = create_database(self.admin_url, "fld_it_dagster", self._durable_commits)
        self.warehouse_url = create_database(self.admin_url, "fld_it_warehouse", self._durable_commits)
        engine = get_engine(self.warehouse_url)
        init_databases(engine, engine)

        config = yaml.safe_load((REPO / "dagster.yaml").read_text())  # the production config itself
        if self._daemon_loop:
            config["run_coordinator"] = {
                **config["run_coordinator"],
                "config": {**config["run_coordinator"].get("config", {}), "dequeue_interval_seconds": self._daemon_loop},
            }
        for key, value in self._overrides.items():
            config[key] = value
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

        pg = make_url(self.instance_url)
        # The daemon and the webserver create runs (and their planned events) without importing the
        # code location: they get its event levers as a deployment does (defs/code_location/event_levers.py).
        from feedback_loop_dagster.defs.code_location.event_levers import unset_event_levers

        self.env = {
            **unset_event_levers(),
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_PG_HOST": pg.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(pg.port or 5432),
            "DAGSTER_PG_DB": pg.database,
            "DAGSTER_PG_USERNAME": pg.username or "postgres",
            "DAGSTER_PG_PASSWORD": pg.password or "",
            "FEEDBACK_LOOP_DATABASE_URL": self.warehouse_url,
            "FEEDBACK_LOOP_SENSOR_INTERVAL_SECONDS": str(self._sensor_interval),
            **({"FEEDBACK_LOOP_SOURCE_TIMEOUT_MS": str(self._source_timeout_ms)} if self._source_timeout_ms else {}),
            **({"FEEDBACK_LOOP_START_DATE": self._start_date} if self._start_date else {}),
            **self._extra_env,
        }
        # The test process reads the same instance (DagsterInstance.get()) and warehouse.
        for key, value in self.env.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        os.environ.pop("FEEDBACK_LOOP_SOURCE_URL", None)
        # Create Dagster's tables once, before the processes start: a daemon and a webserver that
        # both find a fresh database race to create them (DuplicateTable). Production does the
        # same with `dagster instance migrate` before starting (docs/deploy.md).
        self.instance.get_runs(limit=1)

    def close(self) -> None:
        # Killed, not shut down: the deployment is thrown away with its databases, and a daemon
        # waits for its threads (up to 30 s each) before it exits on SIGTERM.
        for name in list(self.processes):
            stop_process_tree(self.processes.pop(name), grace=0)
        with contextlib.suppress(Exception):
            if getattr(self, "_instance", None) is not None:
                self._instance.dispose()
        for url in (self.instance_url, self.warehouse_url):
            if url:
                with contextlib.suppress(Exception):
                    drop_database(self.admin_url, url)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}

    # --- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-c", DEFAULT_SIGNALS, *args],
            cwd=REPO,
            # PYTHONWARNINGS: Dagster's beta/preview warnings would drown the logs that failures show.
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own session, so the whole tree is found and stopped by pid
        )
        log.close()
        self.processes[name] = proc
        return proc

    def start_daemon(self) -> subprocess.Popen:
        command = [str(BIN / "dagster-daemon")]
        if self._daemon_loop:
            command = [sys.executable, "-m", "feedback_loop_dagster_tests.integration.quick_daemon", str(self._daemon_loop)]
        return self._spawn("daemon", [*command, "run", "-w", str(REPO / "workspace.yaml")])

    def start_webserver(self, ceiling: float = CEILING_SECONDS) -> subprocess.Popen:
        proc = self._spawn(
            "webserver",
            [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port), "-w", str(REPO / "workspace.yaml")],
        )
        # Starting up writes no events: only the ceiling applies.
        self.wait_until(self._location_loaded, stall=None, ceiling=ceiling, what="the webserver to load the code location")
        return proc

    def stop(self, name: str) -> None:
        proc = self.processes.pop(name, None)
        if proc is not None:
            stop_process_tree(proc)

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(out)

    def wait_until(
        self,
        predicate: Callable[[], Any],
        *,
        what: str,
        stall: float | None = STALL_SECONDS,
        ceiling: float = CEILING_SECONDS,
        interval: float = 0.5,
    ) -> Any:
        """Polls `predicate` until it returns something truthy, and returns that. Fails when the
        deployment made no progress (`progress_marker` unchanged) for `stall` seconds (None: never),
        after `ceiling` seconds in all, or when one of its processes exits."""
        started = last_progress = time.monotonic()
        marker = self._progress_marker()
        last_error: Exception | None = None
        while True:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode} while waiting for {what}\n{self.log_tail()}")
            try:
                value = predicate()
                if value:
                    return value
            except (OSError, sa.exc.SQLAlchemyError, RuntimeError) as exc:
                # the webserver not listening yet, a database restarting; programming errors raise
                last_error = exc
            now = time.monotonic()
            current = self._progress_marker()
            if current != marker:
                marker, last_progress = current, now
            if stall is not None and now - last_progress > stall:
                reason = f"no progress for {stall:.0f} s"
            elif now - started > ceiling:
                reason = f"still waiting after {ceiling:.0f} s"
            else:
                time.sleep(interval)
                continue
            raise AssertionError(
                f"{reason} waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "")
                + f"\n{self.log_tail()}"
            )

    def _progress_marker(self) -> int | None:
        """The newest event id of the instance: it moves with every run, step and materialisation."""
        try:
            return self.instance.event_log_storage.get_maximum_record_id()
        except (OSError, sa.exc.SQLAlchemyError):
            return None  # the database is restarting: no progress seen

    # --- the instance and the webserver ----------------------------------------------------

    @property
    def instance(self):
        import dagster as dg

        if getattr(self, "_instance", None) is None:
            self._instance = dg.DagsterInstance.from_config(str(self.home))
        return self._instance

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: dict | None = None, timeout: float = CEILING_SECONDS) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # GraphQL errors come back as HTTP 500 with a body
            raw = exc.read()
            try:
                payload = json.loads(raw or b"{}")
            except ValueError:
                raise RuntimeError(f"GraphQL HTTP {exc.code}: {raw[:2000]!r}") from None
            if not payload.get("errors"):
                raise RuntimeError(f"GraphQL HTTP {exc.code}: {raw[:2000]!r}") from None
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def client(self):
        from dagster_graphql import DagsterGraphQLClient

        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=CEILING_SECONDS)

    def _location_loaded(self) -> bool:
        data = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }",
        )
        for entry in data["workspaceOrError"]["locationEntries"]:
            if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
                error = entry["locationOrLoadError"]
                if error and error["__typename"] == "PythonError":
                    raise AssertionError(f"code location failed to load: {error['message']}")
                return True
        return False

    def selector(self, name: str, kind: str = "sensor") -> dict:
        return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, f"{kind}Name": name}

    def start_sensor(self, name: str) -> None:
        data = self.graphql(
            "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename "
            "... on Sensor { sensorState { status } } ... on PythonError { message } } }",
            {"s": self.selector(name)},
        )
        result = data["startSensor"]
        assert result["__typename"] == "Sensor" and result["sensorState"]["status"] == "RUNNING", result

    def stop_sensor(self, name: str) -> None:
        sensor = self.graphql(
            "query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { __typename "
            "... on Sensor { id sensorState { status } } } }",
            {"s": self.selector(name)},
        )["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        if sensor["sensorState"]["status"] == "RUNNING":
            result = self.graphql(
                "mutation($id: String!) { stopSensor(id: $id) { __typename "
                "... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }",
                {"id": sensor["id"]},
            )["stopSensor"]
            assert result["__typename"] == "StopSensorMutationResult", result

    def launch_backfill(self, partition_names: list[str], asset_keys: list[str], title: str = "") -> str:
        """An asset backfill, as the UI's "Materialize selected" launches it; returns its id.

        The dagster-graphql client has no backfill method, so this sends the webserver's own
        mutation through the client's transport."""
        mutation = """
        mutation($params: LaunchBackfillParams!) {
          launchPartitionBackfill(backfillParams: $params) {
            __typename
            ... on LaunchBackfillSuccess { backfillId }
            ... on PythonError { message stack }
            ... on InvalidSubsetError { message }
            ... on UnauthorizedError { message }
          }
        }"""
        params = {
            "partitionNames": partition_names,
            "assetSelection": [{"path": [k]} for k in asset_keys],
            "title": title or None,
            "fromFailure": False,
        }
        result = self.client()._execute(mutation, {"params": params})["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return result["backfillId"]

    # --- processes of runs -----------------------------------------------------------------

    def run_worker_pid(self, run_id: str) -> int | None:
        """The pid of a run's worker process, from its event log (the run's first events carry it)."""
        from dagster import DagsterEventType

        for record in self.instance.all_logs(run_id, of_type={DagsterEventType.RUN_START, DagsterEventType.STEP_START}):
            if record.dagster_event and record.dagster_event.pid:
                return record.dagster_event.pid
        return None
