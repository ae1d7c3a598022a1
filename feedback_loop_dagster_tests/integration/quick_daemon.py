"""`dagster-daemon` whose backfill and sensor loops come round every N seconds, for the integration
tests' deployments: `python -m feedback_loop_dagster_tests.integration.quick_daemon N run -w ...`.

Dagster fixes those loops in code (the backfill daemon's at 30 s, the sensor daemon's at 5 s; no
dagster.yaml setting reaches them), so a test of a backfill would spend most of its time waiting for
the next turn. Everything else is the real daemon, configured by the deployment's dagster.yaml.
"""

from __future__ import annotations

import sys

import dagster._daemon.controller as controller
import dagster._daemon.sensor as sensor
from dagster._daemon.cli import main

# (module, name of its loop period); the backfill loop reads the controller's default at each turn.
LOOP_PERIODS = ((controller, "DEFAULT_DAEMON_INTERVAL_SECONDS"), (sensor, "MIN_INTERVAL_LOOP_TIME"))


def set_loop_seconds(seconds: int) -> None:
    for module, name in LOOP_PERIODS:
        # Loudly, not silently slow again, when a Dagster upgrade renames them.
        if not isinstance(getattr(module, name, None), int):
            raise RuntimeError(f"{module.__name__}.{name} is gone: update quick_daemon.py for this Dagster version")
        setattr(module, name, seconds)


if __name__ == "__main__":
    set_loop_seconds(int(sys.argv.pop(1)))
    sys.argv[0] = "dagster-daemon"
    sys.exit(main())
