"""The README's examples run as written on a fresh database: each block marked
`<!-- readme-test: sh -->` or `<!-- readme-test: python -->`, in order, in real processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from feedback_loop_dagster_tests.processes import CEILING_SECONDS

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- readme-test: (sh|python) -->\n```(?:sh|python)\n(.*?)```", re.S)


def readme_blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_has_the_executed_examples():
    kinds = [kind for kind, _ in readme_blocks()]
    assert kinds == ["sh", "python"]


@pytest.mark.e2e
def test_readme_examples_run_on_a_fresh_database(tmp_path):
    env = dict(os.environ, FEEDBACK_LOOP_DATABASE_URL=f"sqlite:///{tmp_path / 'readme.db'}",
               DAGSTER_HOME=str(tmp_path / "dagster_home"), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("FEEDBACK_LOOP_SOURCE_URL", None)
    outputs = []
    for kind, code in readme_blocks():
        command = ["bash", "-euo", "pipefail", "-c", code] if kind == "sh" else [sys.executable, "-c", code]
        result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=CEILING_SECONDS)
        assert result.returncode == 0, f"README {kind} block failed:\n{result.stdout}\n{result.stderr}"
        outputs.append(result.stdout)
    session, python = outputs
    assert "registered code-review@v9" in session and "stopped experiment" in session and "flowchart RL" in session
    assert "loop health as of" in session and "(all patterns)" in session
    lines = python.strip().splitlines()
    assert lines[-3].startswith("['v") and lines[-3].endswith("'v9']")
    assert lines[-2] == "{'timeout_ms': 4000}" and lines[-1] == "archived"
