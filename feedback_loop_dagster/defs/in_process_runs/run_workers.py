"""Which process runs an in-process run, and what happens to the run when that process dies.

The CLI, the demo and the Python API execute their runs in their own process (defs/in_process_runs/runs.py).
Dagster marks a run failed only from inside its process, or, for runs launched through a code
server, when that server sees its run worker die. A run whose CLI process was SIGKILLed would
stay STARTED forever. So every in-process run carries a `RUN_WORKER_TAG` naming its process
("pid 4242 on build-host"), and a run whose process no longer exists on this host (or whose pid now
belongs to a process started after the run was created) is marked failed:

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
# Process start times come from /proc (or the OS equivalent) at clock-tick resolution, run creation
# times from the run storage: allow this much between the two on one host.
_CLOCK_TOLERANCE_SECONDS = 1.0


@dataclass(frozen=True)
class RunWorker:
    """The process executing a run in-process, as its tag says: "pid 4242 on build-host"."""

    pid: int
    host: str

    def to_tag(self) -> str:
        return f"pid {self.pid} on {self.host}"

    @classmethod
    def from_tag(cls, value: str | None) -> RunWorker | None:
        pid, sep, host = (value or "").removeprefix("pid ").partition(" on ")
        if not sep or not pid.isdigit() or not host:
            return None
        return cls(int(pid), host)

    @classmethod
    def current(cls) -> RunWorker:
        return cls(os.getpid(), socket.gethostname())

    def is_alive(self, run_created: float) -> bool | None:
        """Whether the process that created a run at `run_created` (epoch seconds) still runs: None
        when it ran on another host (cannot tell from here). A process with the same pid that
        started after the run was created is another one (the pid was reused)."""
        if self.host != socket.gethostname():
            return None
        try:
            process = psutil.Process(self.pid)
            if process.create_time() > run_created + _CLOCK_TOLERANCE_SECONDS:
                return False
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
        if worker is not None and worker.is_alive(record.create_timestamp.timestamp()) is False:
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
        record = self._instance.get_run_record_by_id(run.run_id)
        alive = worker.is_alive(record.create_timestamp.timestamp()) if record else None
        if alive is False:
            return CheckRunHealthResult(WorkerStatus.FAILED, dead_worker_message(worker))
        where = "alive" if alive else f"not checkable from {socket.gethostname()}"
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"in-process run worker {worker.to_tag()}: {where}")
