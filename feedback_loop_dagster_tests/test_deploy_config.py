"""The production instance config (dagster.yaml), `feedback-loop check-config`, and the cluster launchers in
deploy/ (compose file, Helm values, entrypoint) checked offline against their vendored schemas."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from feedback_loop_dagster.cli import main
from feedback_loop_dagster.deploy_check import env_references
from feedback_loop_dagster_tests.conftest import create_postgres_database, drop_postgres_database
from feedback_loop_dagster_tests.processes import CEILING_SECONDS

ROOT = Path(__file__).resolve().parents[1]
PG_VARIABLES = ["DAGSTER_PG_DB", "DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name in PG_VARIABLES + ["FEEDBACK_LOOP_DATABASE_URL", "FEEDBACK_LOOP_SOURCE_URL"]:
        monkeypatch.delenv(name, raising=False)
    return home


def _point_at(monkeypatch, url: str) -> None:
    parsed = make_url(url)
    monkeypatch.setenv("DAGSTER_PG_HOST", parsed.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(parsed.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_DB", parsed.database)
    monkeypatch.setenv("DAGSTER_PG_USERNAME", parsed.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", parsed.password or "")


def test_dagster_yaml_reads_every_storage_setting_from_the_environment():
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert sorted(set(env_references(config))) == PG_VARIABLES
    assert "password" not in (ROOT / "dagster.yaml").read_text().replace("password: {env: DAGSTER_PG_PASSWORD}", "")


def test_check_config_names_every_missing_variable_in_one_line(home):
    result = CliRunner().invoke(main, ["check-config"])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ")
    for name in PG_VARIABLES:
        assert name in line


def test_check_config_rejects_a_key_dagster_does_not_know(home, monkeypatch):
    for name in PG_VARIABLES:
        monkeypatch.setenv(name, "x" if name != "DAGSTER_PG_PORT" else "5432")
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["run_retries"]["max_retires"] = 3
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["check-config", "--skip-warehouse"])
    assert result.exit_code == 1
    assert "max_retires" in result.output


def test_check_config_wants_the_warehouse_url_on_a_postgres_instance(home, monkeypatch):
    for name in PG_VARIABLES:
        monkeypatch.setenv(name, "x" if name != "DAGSTER_PG_PORT" else "5432")
    result = CliRunner().invoke(main, ["check-config"])
    assert result.exit_code == 1
    assert "FEEDBACK_LOOP_DATABASE_URL is not set" in result.output


@pytest.mark.postgres
def test_dagster_yaml_loads_on_postgres_with_the_queue_limits_retries_and_monitoring(home, monkeypatch):
    url = create_postgres_database()
    try:
        _point_at(monkeypatch, url)
        monkeypatch.setenv("FEEDBACK_LOOP_DATABASE_URL", url)
        result = CliRunner().invoke(main, ["check-config"])
        assert result.exit_code == 0, result.output
        assert "postgres storage" in result.output

        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
            queue = instance.get_concurrency_config().run_queue_config
            assert queue.max_concurrent_runs == 8
            limits = {limit["key"]: limit for limit in queue.tag_concurrency_limits}
            assert limits["feedback_loop/pattern"] == {
                "key": "feedback_loop/pattern", "value": {"applyLimitPerUniqueValue": True}, "limit": 1
            }
            assert limits["dagster/backfill"]["limit"] == 1
            # two block runs at once, one at a time per block (a long history is several runs)
            batch = [limit for limit in queue.tag_concurrency_limits if limit["key"] == "feedback_loop/batch"]
            assert sorted((limit["limit"], "value" in limit) for limit in batch) == [(1, True), (2, False)]
            assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
            assert instance.run_monitoring_enabled
            assert instance.get_settings("sensors")["use_threads"] is True
            assert instance.get_runs(limit=1) == []  # storage answers (psycopg2 scheme)
    finally:
        drop_postgres_database(url)


@pytest.mark.slow
def test_dagster_daemon_refuses_to_start_without_the_postgres_host(home, monkeypatch):
    for name in PG_VARIABLES:
        if name != "DAGSTER_PG_HOST":
            monkeypatch.setenv(name, "5432" if name == "DAGSTER_PG_PORT" else "x")
    daemon = Path(sys.executable).parent / "dagster-daemon"
    result = subprocess.run(
        [str(daemon), "run", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True, text=True, timeout=CEILING_SECONDS,
    )
    assert result.returncode != 0
    assert 'environment variable "DAGSTER_PG_HOST" which is not set' in result.stdout + result.stderr


def test_sensor_settings_come_from_the_environment_and_reject_nonsense(monkeypatch):
    from feedback_loop_dagster.lib import settings

    for name in (settings.SENSOR_INTERVAL_ENV, settings.SOURCE_TIMEOUT_ENV, settings.SENSOR_DEFAULT_STATUS_ENV):
        monkeypatch.delenv(name, raising=False)
    assert (settings.sensor_interval_seconds(), settings.source_timeout_ms(), settings.sensor_running_by_default()) == (
        30, 20_000, False
    )
    monkeypatch.setenv(settings.SENSOR_INTERVAL_ENV, "5")
    monkeypatch.setenv(settings.SOURCE_TIMEOUT_ENV, "1500")
    monkeypatch.setenv(settings.SENSOR_DEFAULT_STATUS_ENV, "Running")
    assert (settings.sensor_interval_seconds(), settings.source_timeout_ms(), settings.sensor_running_by_default()) == (
        5, 1500, True
    )
    for name, bad in ((settings.SENSOR_INTERVAL_ENV, "0"), (settings.SOURCE_TIMEOUT_ENV, "soon"),
                      (settings.SENSOR_DEFAULT_STATUS_ENV, "on")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=name):
            (settings.sensor_interval_seconds(), settings.source_timeout_ms(), settings.sensor_running_by_default())
        monkeypatch.delenv(name)


# --- the cluster launchers in deploy/, checked offline -----------------------------------------
# Neither Docker nor Kubernetes runs here, so the compose file and the Helm values are checked
# against their published JSON schemas, vendored in deploy/schemas/ (README there says from where),
# with check-jsonschema and yamllint from the dev dependencies: no network at test time.

SCHEMAS = ROOT / "deploy" / "schemas"
YAML_FILES = ["dagster.yaml", "workspace.yaml", "deploy/docker-compose.yaml", "deploy/helm-values.yaml",
              "deploy/workspace.docker.yaml"]


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _check_compose(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool("check-jsonschema"), "--schemafile", str(SCHEMAS / "compose-spec.json"), str(path)],
        capture_output=True, text=True, timeout=CEILING_SECONDS,
    )


def _chart_values_validator():
    """The Dagster chart's values schema as it applies to an override file. Helm validates the
    values merged over the chart's own defaults, so nothing is required of an override file;
    Kubernetes objects inside (resources, env entries, probes) refer to schemas online and are
    checked as objects only. Every key and type of the chart's own settings is checked."""
    import jsonschema

    def for_overrides(node):
        if isinstance(node, dict):
            return {k: for_overrides(v) for k, v in node.items()
                    if k != "required" and not (k == "$ref" and not v.startswith("#"))}
        if isinstance(node, list):
            return [for_overrides(v) for v in node]
        return node

    schema = json.loads((SCHEMAS / "dagster-helm-values.schema.json").read_text())
    return schema, jsonschema.Draft7Validator(for_overrides(schema))


def _helm_problems(values: dict) -> list[str]:
    schema, validator = _chart_values_validator()
    # The chart's schema admits unknown top-level keys (subcharts); a misspelt section is an error here.
    problems = [f"unknown top-level key {key!r}" for key in values if key not in schema["properties"]]
    return problems + [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


def test_deploy_yaml_passes_yamllint():
    result = subprocess.run([_tool("yamllint"), "--strict", *YAML_FILES], cwd=ROOT, capture_output=True, text=True, timeout=CEILING_SECONDS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid_compose_spec_and_a_wrong_key_is_refused(tmp_path):
    good = _check_compose(ROOT / "deploy" / "docker-compose.yaml")
    assert good.returncode == 0, good.stdout + good.stderr
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yaml").read_text())
    compose["services"]["daemon"]["restart_policy"] = "always"  # a key of swarm's deploy:, not of a service
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(compose))
    bad = _check_compose(tmp_path / "compose.yaml")
    assert bad.returncode == 1 and "restart_policy" in bad.stdout + bad.stderr


def test_helm_values_fit_the_dagster_chart_schema_and_a_wrong_key_is_refused():
    values = yaml.safe_load((ROOT / "deploy" / "helm-values.yaml").read_text())
    assert _helm_problems(values) == []
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurentRuns"] = 8
    values["dagsterDeamon"] = {}
    problems = _helm_problems(values)
    assert any("maxConcurentRuns" in p for p in problems) and any("dagsterDeamon" in p for p in problems), problems


def test_daemon_and_webserver_get_the_code_locations_event_levers_everywhere():
    """They create runs and write their planned events without importing the code location."""
    from feedback_loop_dagster.defs.code_location.event_levers import EVENT_LEVERS

    values = yaml.safe_load((ROOT / "deploy" / "helm-values.yaml").read_text())
    assert values["dagsterDaemon"]["env"] == EVENT_LEVERS
    assert values["dagsterWebserver"]["env"] == EVENT_LEVERS
    # The image's entrypoint (every compose service, run pods) exports them; an explicit value wins.
    env = {k: v for k, v in os.environ.items() if k not in EVENT_LEVERS}
    env.update(PATH=f"{Path(sys.executable).parent}:{env['PATH']}", FEEDBACK_LOOP_SKIP_CHECK="1",
               DAGSTER_EVENT_BATCH_SIZE="7")
    result = subprocess.run(["sh", str(ROOT / "deploy" / "entrypoint.sh"), "env"], env=env,
                            capture_output=True, text=True, timeout=CEILING_SECONDS)
    assert result.returncode == 0, result.stderr
    exported = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert exported["DAGSTER_EVENT_BATCH_SIZE"] == "7"
    assert exported["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] == EVENT_LEVERS[
        "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"]


def test_the_helm_values_queue_runs_as_dagster_yaml_does():
    """The cluster's run queue keeps the same limits (one run per pattern and per block at a time)."""
    helm = yaml.safe_load((ROOT / "deploy" / "helm-values.yaml").read_text())
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]["runs"]
    queue = helm["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queue["maxConcurrentRuns"] == local["max_concurrent_runs"]
    assert queue["tagConcurrencyLimits"] == local["tag_concurrency_limits"]
