"""The code location: `dagster dev -w workspace.yaml` or `dagster dev -m feedback_loop_dagster.definitions`."""

from __future__ import annotations

import dagster as dg

from feedback_loop_dagster.defs.analyze.assets import pattern_analysis
from feedback_loop_dagster.defs.apply.assets import applied_improvements
from feedback_loop_dagster.defs.collect.assets import feedback_dataset, hook_executions
from feedback_loop_dagster.defs.collect.sensors import new_executions_sensor
from feedback_loop_dagster.defs.event_levers import apply_event_levers
from feedback_loop_dagster.defs.experiment.assets import experiments
from feedback_loop_dagster.defs.health.assets import loop_health
from feedback_loop_dagster.defs.jobs import feedback_loop_job
from feedback_loop_dagster.defs.lineage.assets import pattern_lineage
from feedback_loop_dagster.defs.propose.assets import improvement_proposals
from feedback_loop_dagster.defs.resources import databases_from_environment
from feedback_loop_dagster.defs.schedules import daily_loop_schedule
from feedback_loop_dagster.defs.validate.assets import ab_test_results

# Fewer, batched event writes per partition wherever this code location runs (defs/event_levers.py).
apply_event_levers()

defs = dg.Definitions(
    assets=[
        hook_executions,
        feedback_dataset,
        pattern_analysis,
        improvement_proposals,
        experiments,
        ab_test_results,
        applied_improvements,
        pattern_lineage,
        loop_health,
    ],
    jobs=[feedback_loop_job],
    sensors=[new_executions_sensor],
    schedules=[daily_loop_schedule],
    resources={"databases": databases_from_environment()},
    # Each run is one chain of stages, so a process per step (the default multiprocess executor)
    # buys no parallelism and costs an interpreter start and import per stage (seconds each).
    executor=dg.in_process_executor,
)
