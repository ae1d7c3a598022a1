"""The `feedback-loop` command as a person runs it: in a real subprocess on a given database, and
in-process (click's runner) for the error cases, which need no process of their own."""

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


def cli_many(*commands: tuple[str, ...], url: str, tmp_path: Path) -> list[subprocess.CompletedProcess]:
    """Several commands at once (each its own process), all expected to succeed."""
    env = cli_env(url, tmp_path)
    procs = [subprocess.Popen([*CLI, *c], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    results = []
    for command, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=CEILING_SECONDS)
        assert proc.returncode == 0, (command, out, err)
        results.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return results


def cli_error(*args: str, url: str, tmp_path: Path) -> str:
    """An error case, in-process (the happy path of the same command runs in a subprocess):
    exit status 1 and the one-line message, returned."""
    from click.testing import CliRunner

    from feedback_loop_dagster.cli import main

    result = CliRunner().invoke(main, list(args), env=cli_env(url, tmp_path))
    assert result.exit_code == 1, (args, result.output, result.exception)
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr
