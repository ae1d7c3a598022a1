"""The code location loads, as `dagster dev` and the daemon would load it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from feedback_loop_dagster.definitions import defs

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_validate_from_the_workspace(tmp_path):
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_definitions_hold_the_collect_stage():
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    assert {k.to_user_string() for k in repository.assets_defs_by_key} >= {"hook_executions", "feedback_dataset"}
    assert repository.has_sensor_def("new_executions_sensor")
    checks = {key.name for key in repository.asset_graph.asset_check_keys}
    assert "feedback_validity_share" in checks
