"""The code location: `dagster dev -w workspace.yaml` or `dagster dev -m feedback_loop_dagster.definitions`."""

from __future__ import annotations

import dagster as dg

from feedback_loop_dagster.defs.analyze.assets import pattern_analysis
from feedback_loop_dagster.defs.apply.assets import applied_improvements
from feedback_loop_dagster.defs.collect.assets import feedback_dataset, hook_executions
from feedback_loop_dagster.defs.experiment.assets import experiments
from feedback_loop_dagster.defs.propose.assets import improvement_proposals
from feedback_loop_dagster.defs.validate.assets import ab_test_results
from feedback_loop_dagster.defs.collect.sensors import new_executions_sensor
from feedback_loop_dagster.defs.jobs import feedback_loop_job
from feedback_loop_dagster.defs.resources import databases_from_environment

defs = dg.Definitions(
    assets=[
        hook_executions,
        feedback_dataset,
        pattern_analysis,
        improvement_proposals,
        experiments,
        ab_test_results,
        applied_improvements,
    ],
    jobs=[feedback_loop_job],
    sensors=[new_executions_sensor],
    resources={"databases": databases_from_environment()},
)
