"""`feedback-loop check-config`: is this environment ready to run the deployment?

Dagster itself refuses to start with a variable of dagster.yaml unset, but says so inside a
hundred-line traceback, one variable at a time. This check names every missing variable in one line,
validates the instance config against Dagster's schema, and checks the warehouse the code location
will use; the Docker image and the Helm chart run it before starting a process (docs/deploy.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import yaml

from feedback_loop_dagster.lib import partition_start, settings
from feedback_loop_dagster.lib.errors import ConfigError


class ConfigProblem(ConfigError):
    """The deployment cannot start as configured; the message says what to set."""


def env_references(config: Any) -> Iterator[str]:
    """Every `{env: NAME}` in a parsed dagster.yaml."""
    if isinstance(config, dict):
        if set(config) == {"env"} and isinstance(config["env"], str):
            yield config["env"]
            return
        for value in config.values():
            yield from env_references(value)
    elif isinstance(config, list):
        for value in config:
            yield from env_references(value)


def check_instance_config(dagster_home: Path) -> dict[str, Any]:
    """Checks $DAGSTER_HOME/dagster.yaml: variables set, keys valid for this Dagster. Returns it."""
    path = dagster_home / "dagster.yaml"
    if not path.is_file():
        raise ConfigProblem(f"no {path}: copy the repository's dagster.yaml there (DAGSTER_HOME={dagster_home})")
    config = yaml.safe_load(path.read_text()) or {}
    missing = sorted({name for name in env_references(config) if os.environ.get(name) is None})
    if missing:
        raise ConfigProblem(
            f"{path} reads environment variable(s) that are not set: {', '.join(missing)} "
            "(README, Configuration; an empty value is allowed, e.g. DAGSTER_PG_PASSWORD= with trust auth)"
        )
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config

    try:
        dagster_instance_config(str(dagster_home))
    except DagsterInvalidConfigError as exc:
        details = "; ".join(str(e.message) for e in exc.errors) if exc.errors else str(exc)
        raise ConfigProblem(f"{path} is not a valid Dagster instance config: {details}") from None
    return config


def check_warehouse(config: dict[str, Any]) -> str:
    """The warehouse URL the code location will use; on a PostgreSQL instance it must be set."""
    from feedback_loop_dagster.lib.storage.database import get_engine, redact

    if "postgres" in (config.get("storage") or {}) and not os.environ.get(settings.DATABASE_URL_ENV):
        raise ConfigProblem(
            f"{settings.DATABASE_URL_ENV} is not set: the code location would write to the SQLite default "
            f"{settings.default_database_url()} inside the container instead of the warehouse"
        )
    url = settings.database_url()
    get_engine(url)  # StorageError with the reason when it cannot connect
    if os.environ.get(settings.SOURCE_URL_ENV):
        get_engine(settings.source_url())
    partition_start.window_start_date()
    settings.sensor_interval_seconds()
    settings.source_timeout_ms()
    settings.sensor_running_by_default()
    return redact(url)


@click.command("check-config")
@click.option("--skip-warehouse", is_flag=True, help="Only check the Dagster instance config (no connection).")
def check_config(skip_warehouse: bool) -> None:
    """Check the deployment's environment: every variable dagster.yaml reads is set, the instance
    config is valid for this Dagster version, and the warehouse answers."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise ConfigProblem("DAGSTER_HOME is not set: it names the folder holding dagster.yaml")
    config = check_instance_config(Path(home))
    storage = next(iter(config.get("storage") or {"sqlite": None}))
    click.echo(f"ok: {Path(home) / 'dagster.yaml'} is valid ({storage} storage)")
    if not skip_warehouse:
        click.echo(f"ok: warehouse {check_warehouse(config)} answers")
