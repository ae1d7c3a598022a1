"""Helpers for the tests about processes: runs in another process, a parent that ignores SIGTERM,
what is left of a process session, and waits that end when their condition holds."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
# Only a hang guard, for every wait and every subprocess of the suite: a wait ends as soon as its
# condition holds, and a command as soon as it is done. A README session or a CLI backfill takes a
# minute or two on a quiet 2-core machine; at load average 20 it takes ten times that.
CEILING_SECONDS = 1800

# A run executed in-process, as the CLI executes one, whose step waits until the process is killed.
BLOCKING_RUN = textwrap.dedent(
    """
    import sys, time
    import dagster as dg
    from feedback_loop_dagster.defs.in_process_runs.runs import launch_in_process

    @dg.asset
    def waits_forever():
        open(sys.argv[2], "w").close()  # inside the step now
        while True:
            time.sleep(1)

    job = dg.Definitions(assets=[waits_forever], jobs=[dg.define_asset_job("blocking_job")]).resolve_job_def("blocking_job")
    with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
        launch_in_process(job, instance, tags={})
    """
)

# What a supervisor or CI wrapper that ignores SIGTERM for its children does, then the command.
IGNORING_SIGTERM = "import os, signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"


def wait_for(predicate: Callable[[], Any], what: str, ceiling: float = CEILING_SECONDS, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + ceiling
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"gave up after {ceiling:.0f} s waiting for {what}")


def start_blocking_run(home: Path, folder: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    """Starts BLOCKING_RUN against the instance in `home`, in its own session; returns the process
    and the file that appears once the run is inside its step."""
    script, inside = folder / "blocking_run.py", folder / "inside-the-step"
    script.write_text(BLOCKING_RUN)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(home), str(inside)], cwd=ROOT, env=env, start_new_session=True
    )
    return proc, inside


def ignoring_sigterm(command: Sequence[str]) -> list[str]:
    """`command` started by a parent that set SIGTERM to ignored (inherited across exec)."""
    return [sys.executable, "-c", IGNORING_SIGTERM, *command]


def session_processes(session: int) -> list[psutil.Process]:
    """Every process still in the session `session` (orphans reparented to init included)."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            if os.getsid(p.pid) == session:
                found.append(p)
    return found


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every live descendant of `pid` (those ending while we look included)."""
    found = {}
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                found[child.pid] = " ".join(child.cmdline()) or child.name()
    return found
