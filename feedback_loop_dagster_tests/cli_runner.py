"""The `feedback-loop` command as a person runs it: in a real subprocess on a given database (the
commands that execute Dagster runs), and in-process (click's runner) for the error cases and the
commands that need no process of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from feedback_loop_dagster_tests.processes import CEILING_SECONDS

CLI = [sys.executable, "-m", "feedback_loop_dagster.cli"]


def cli_env(url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a command on `url`, with its own DAGSTER_HOME under `tmp_path`."""
    env = dict(os.environ, FEEDBACK_LOOP_DATABASE_URL=url, DAGSTER_HOME=str(tmp_path / "dagster_home"), USER="tester")
    env.pop("FEEDBACK_LOOP_SOURCE_URL", None)
    return env


def cli(*args: str, url: str, tmp_path: Path, code: int = 0) -> subprocess.CompletedProcess:
    """One command in its own process, expected to exit with `code`."""
    result = subprocess.run([*CLI, *args], env=cli_env(url, tmp_path), capture_output=True, text=True,
                            timeout=CEILING_SECONDS)
    assert result.returncode == code, (args, result.stdout, result.stderr)
    return result


def in_process(*args: str, url: str, tmp_path: Path, code: int = 0):
    """One command in this process (click's runner), expected to exit with `code`; its result has
    .stdout and .stderr apart. For the commands that execute no Dagster run (registry, review,
    lineage, init-db): what they print and store does not depend on a process of their own, and
    each saves a process start-up (seconds: Python, Dagster and the project imported again)."""
    from click.testing import CliRunner

    from feedback_loop_dagster.cli import main

    result = CliRunner().invoke(main, list(args), env=cli_env(url, tmp_path))
    assert result.exit_code == code, (args, result.output, result.exception)
    return result


def cli_error(*args: str, url: str, tmp_path: Path) -> str:
    """An error case, in-process: exit status 1 and the one-line message, returned."""
    result = in_process(*args, url=url, tmp_path=tmp_path, code=1)
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr
