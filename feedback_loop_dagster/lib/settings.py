"""Where the project keeps its data and which environment variables configure it.

Every default lives here so the CLI, the Dagster definitions and the tests agree on them.
"""

from __future__ import annotations

import os
from pathlib import Path

from feedback_loop_dagster.lib.errors import ConfigError

DATABASE_URL_ENV = "FEEDBACK_LOOP_DATABASE_URL"
SOURCE_URL_ENV = "FEEDBACK_LOOP_SOURCE_URL"
DATA_DIR_ENV = "FEEDBACK_LOOP_DATA_DIR"
START_DATE_ENV = "FEEDBACK_LOOP_START_DATE"
SENSOR_INTERVAL_ENV = "FEEDBACK_LOOP_SENSOR_INTERVAL_SECONDS"
SOURCE_TIMEOUT_ENV = "FEEDBACK_LOOP_SOURCE_TIMEOUT_MS"
SENSOR_DEFAULT_STATUS_ENV = "FEEDBACK_LOOP_SENSOR_DEFAULT_STATUS"
MAX_DURATION_ENV = "FEEDBACK_LOOP_MAX_DURATION_MS"

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The first window until a first day with data is recorded (lib/partition_start.py); override with
# FEEDBACK_LOOP_START_DATE.
DEFAULT_WINDOW_START_DATE = "2025-01-01"
SOURCE_TABLE = "hook_executions"
# The longest execution the collector believes (DESIGN.md section 2): 24 h in milliseconds.
DEFAULT_MAX_DURATION_MS = 24 * 3600 * 1000


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or PROJECT_ROOT / "data")


def default_database_url() -> str:
    return f"sqlite:///{data_dir() / 'feedback_loop.db'}"


def database_url() -> str:
    return os.environ.get(DATABASE_URL_ENV) or default_database_url()


def source_url() -> str:
    return os.environ.get(SOURCE_URL_ENV) or database_url()


def dagster_home() -> Path:
    """The Dagster instance folder: $DAGSTER_HOME, else a git-ignored folder in the project."""
    home = Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    return home


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} is not a positive whole number")
    return value


def sensor_interval_seconds() -> int:
    """Minimum seconds between two ticks of new_executions_sensor (default 30)."""
    return _positive_int(SENSOR_INTERVAL_ENV, 30)


def source_timeout_ms() -> int:
    """PostgreSQL statement timeout of the sensor's source query, lock waits included (default 20 s)."""
    return _positive_int(SOURCE_TIMEOUT_ENV, 20_000)


def sensor_running_by_default() -> bool:
    """Whether new_executions_sensor starts on its own (`running`) or waits to be turned on (`stopped`,
    the default) when the deployment first loads it. A status set in the UI always wins."""
    raw = (os.environ.get(SENSOR_DEFAULT_STATUS_ENV) or "stopped").strip().lower()
    if raw not in ("running", "stopped"):
        raise ConfigError(f"{SENSOR_DEFAULT_STATUS_ENV}={raw!r} must be 'running' or 'stopped'")
    return raw == "running"


def max_duration_ms() -> float:
    """Durations above this many milliseconds are implausible and quarantined (default 24 h)."""
    raw = os.environ.get(MAX_DURATION_ENV)
    if not raw:
        return float(DEFAULT_MAX_DURATION_MS)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise ConfigError(f"{MAX_DURATION_ENV}={raw!r} is not a positive number of milliseconds")
    return value
