"""The code location: `dagster dev -w workspace.yaml` or `dagster dev -m feedback_loop_dagster.definitions`."""

from __future__ import annotations

import dagster as dg

from feedback_loop_dagster.defs.collect.assets import feedback_dataset, hook_executions
from feedback_loop_dagster.defs.collect.sensors import new_executions_sensor
from feedback_loop_dagster.defs.jobs import feedback_loop_job
from feedback_loop_dagster.defs.resources import databases_from_environment

defs = dg.Definitions(
    assets=[hook_executions, feedback_dataset],
    jobs=[feedback_loop_job],
    sensors=[new_executions_sensor],
    resources={"databases": databases_from_environment()},
)
