"""The code location loads, as `dagster dev` and the daemon would load it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from feedback_loop_dagster.definitions import build_definitions, defs
from feedback_loop_dagster.defs.code_location.clock import clock_run_config, midnight_after
from feedback_loop_dagster_tests.integration.harness import free_port
from feedback_loop_dagster_tests.processes import CEILING_SECONDS, session_processes, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_definitions_validate_from_the_workspace(tmp_path):
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CEILING_SECONDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_definitions_hold_the_collect_stage():
    loaded = defs()
    dg.Definitions.validate_loadable(loaded)
    repository = loaded.get_repository_def()
    assert {k.to_user_string() for k in repository.assets_defs_by_key} >= {"hook_executions", "feedback_dataset"}
    assert repository.has_sensor_def("new_executions_sensor")
    checks = {key.name for key in repository.asset_graph.asset_check_keys}
    assert "feedback_validity_share" in checks


@pytest.mark.e2e
def test_the_code_location_loads_without_warnings_and_dg_finds_the_project(tmp_path):
    """`make ui` (`dg dev`) and `make demo` start quietly: no Beta/Preview/Supersession warnings from
    loading the definitions, and `dg` loads the project pyproject.toml's [tool.dg] describes."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = dict(os.environ, DAGSTER_HOME=str(home), VIRTUAL_ENV=str(Path(sys.executable).parents[1]))
    loaded = subprocess.run([sys.executable, "-W", "always", "-c", "from feedback_loop_dagster.definitions import defs; defs()"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=CEILING_SECONDS)
    assert loaded.returncode == 0 and "Warning" not in loaded.stderr, loaded.stderr

    checked = subprocess.run([str(Path(sys.executable).parent / "dg"), "check", "defs"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=CEILING_SECONDS)
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "All definitions loaded successfully" in output
    assert "Warning" not in output and "WARNING" not in output, output


@pytest.mark.e2e
def test_make_ui_starts_without_a_warning(tmp_path):
    """`make ui` (dg dev from inside its DAGSTER_HOME, the repository's production dagster.yaml left
    where the deployment docs keep it) until the webserver serves: not one warning on the way."""
    log = tmp_path / "make-ui.log"
    with log.open("w") as out:
        # -o: never reinstall the virtualenv from inside a test, whatever the stamp's age.
        make = subprocess.Popen(
            ["make", "-o", ".venv/.installed", "ui", f"UI_PORT={free_port()}", f"DAGSTER_HOME={tmp_path / 'home'}"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        wait_for(lambda: "Serving dagster-webserver" in log.read_text() or make.poll() is not None, "`make ui` to serve")
    finally:
        for process in session_processes(make.pid):
            process.kill()
        make.wait()
    text = log.read_text()
    assert "Serving dagster-webserver" in text, text
    assert "arning" not in text and "WARNING" not in text, text


def test_the_loop_must_close_for_the_latest_window_by_its_freshness_deadline():
    """loop_health, the last stage, carries a cron freshness policy whose window (midnight to the
    deadline) holds the daily schedule's tick, and the instances enable its evaluation."""
    from datetime import datetime, timedelta

    from dagster._utils.schedules import cron_string_iterator

    from feedback_loop_dagster.defs.code_location.schedules import CRON

    spec = next(s for s in build_definitions().resolve_all_asset_specs() if s.key == dg.AssetKey("loop_health"))
    policy = spec.freshness_policy
    assert isinstance(policy, dg.FreshnessPolicy) and policy.timezone == "UTC"
    midnight = datetime(2026, 3, 2).timestamp()
    deadline = next(cron_string_iterator(midnight, policy.deadline_cron, "UTC"))
    tick = next(cron_string_iterator(midnight, CRON, "UTC"))
    assert deadline.timestamp() - policy.lower_bound_delta.total_seconds() <= midnight < tick.timestamp() < deadline.timestamp()
    assert deadline - tick >= timedelta(hours=2)  # room for the run itself
    assert "freshness:\n  enabled: true" in (Path(__file__).parents[1] / "dagster.yaml").read_text()


def test_the_clock_is_one_resource_the_clocked_assets_share():
    """`now` is set once, on the `clock` resource (bound by build_definitions, or per run by its run
    config), not per asset: exactly the assets that start experiments or watches use it."""
    moment = midnight_after(date(2026, 1, 5))
    built = build_definitions(clock=moment)
    repository = built.get_repository_def()
    users = {key.to_user_string() for key, node in repository.assets_defs_by_key.items() if "clock" in node.required_resource_keys}
    assert users == {"experiments", "applied_improvements"}
    assert built.resources["clock"].simulated_now() == moment
    assert build_definitions().resources["clock"].simulated_now() is None
    assert clock_run_config(moment) == {"resources": {"clock": {"config": {"now": moment.isoformat()}}}}
