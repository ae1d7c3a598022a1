"""Which process runs an in-process run, and what happens to the run when that process dies.

The CLI, the demo and the Python API execute their runs in their own process (defs/runs.py).
Dagster marks a run failed only from inside its process, or, for runs launched through a code
server, when that server sees its run worker die. A run whose CLI process was SIGKILLed would
stay STARTED forever. So every in-process run carries a `RUN_WORKER_TAG` naming its process
(host, pid, process start time), and a run whose named process no longer exists on this host is
marked failed:

- by `fail_dead_runs`, which every in-process launch calls first (the next CLI, demo or API call
  on the host cleans up after the killed one; on SQLite that is the only way);
- by the daemon's run monitoring (dagster.yaml `run_monitoring`), through
  `RunWorkerAwareLauncher.check_run_worker_health`, within one `poll_interval_seconds`.

A process on another host cannot be checked from here: its runs are left alone until a launch or a
daemon on that host looks at them. This module is light (no code location import), because the
instance loads the launcher from dagster.yaml in every Dagster process.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import dagster as dg
import psutil

# Not exported at dagster's top level: the launcher's health-check vocabulary (`RunLauncher`
# returns these to run monitoring).
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

RUN_WORKER_TAG = "feedback_loop/run_worker"
# Process start times are read from /proc (or the OS equivalent) with a resolution of a clock tick.
_START_TIME_TOLERANCE_SECONDS = 1.0


@dataclass(frozen=True)
class RunWorker:
    host: str
    pid: int
    started: float  # the process's start time (epoch seconds), to tell a reused pid apart

    def to_tag(self) -> str:
        return f"{self.host}:{self.pid}:{self.started:.2f}"

    @classmethod
    def from_tag(cls, value: str | None) -> RunWorker | None:
        if not value:
            return None
        parts = value.rsplit(":", 2)
        if len(parts) != 3:
            return None
        try:
            return cls(parts[0], int(parts[1]), float(parts[2]))
        except ValueError:
            return None

    @classmethod
    def current(cls) -> RunWorker:
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time())

    def is_alive(self) -> bool | None:
        """True / False for a process of this host; None when it runs elsewhere (cannot tell)."""
        if self.host != socket.gethostname():
            return None
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.started) > _START_TIME_TOLERANCE_SECONDS:
                return False  # the pid now belongs to another process
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


def current_worker_tags() -> dict[str, str]:
    return {RUN_WORKER_TAG: RunWorker.current().to_tag()}


def dead_worker_message(worker: RunWorker) -> str:
    return (
        f"The process that ran this run in-process (pid {worker.pid} on {worker.host}) ended without "
        "finishing it (killed, or the machine stopped); marked failed."
    )


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Marks failed every unfinished in-process run whose process on this host is gone; returns
    their run ids. Runs of live processes, of other hosts and launched by the daemon are left alone."""
    unfinished = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    failed = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=unfinished)):
        run = record.dagster_run
        worker = RunWorker.from_tag(run.tags.get(RUN_WORKER_TAG))
        if worker is not None and worker.is_alive() is False:
            instance.report_run_failed(run, dead_worker_message(worker))
            failed.append(run.run_id)
    return failed


class RunWorkerAwareLauncher(dg.DefaultRunLauncher):
    """The default run launcher, plus a health check for in-process runs so that the daemon's run
    monitoring fails those whose process died. Runs it launched itself report as running: their
    code server already marks them failed when their worker dies."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        worker = RunWorker.from_tag(run.tags.get(RUN_WORKER_TAG))
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "launched through a code server, which watches it")
        alive = worker.is_alive()
        if alive is False:
            return CheckRunHealthResult(WorkerStatus.FAILED, dead_worker_message(worker))
        where = "alive" if alive else f"on {worker.host}, not checkable from {socket.gethostname()}"
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"in-process run worker pid {worker.pid} {where}")
