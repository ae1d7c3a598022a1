"""The code location: `dagster dev -w workspace.yaml` or `dagster dev -m feedback_loop_dagster.definitions`.

`build_definitions` is the one place the loop's definitions are put together; the code location
(`defs`), the CLI, the Python API, the demo, the benchmarks and the tests all call it, with their
own databases or clock where they need them.
"""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from feedback_loop_dagster.defs.analyze.assets import pattern_analysis
from feedback_loop_dagster.defs.apply.assets import applied_improvements
from feedback_loop_dagster.defs.code_location.clock import CLOCK_RESOURCE, LoopClock
from feedback_loop_dagster.defs.code_location.event_levers import apply_event_levers
from feedback_loop_dagster.defs.code_location.jobs import feedback_loop_job
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases, databases_from_environment
from feedback_loop_dagster.defs.code_location.schedules import daily_loop_schedule
from feedback_loop_dagster.defs.collect.assets import feedback_dataset, hook_executions
from feedback_loop_dagster.defs.collect.sensors import new_executions_sensor
from feedback_loop_dagster.defs.experiment.assets import experiments
from feedback_loop_dagster.defs.health.assets import loop_health
from feedback_loop_dagster.defs.lineage.assets import pattern_lineage
from feedback_loop_dagster.defs.propose.assets import improvement_proposals
from feedback_loop_dagster.defs.validate.assets import ab_test_results


def build_definitions(databases: FeedbackDatabases | None = None, clock: datetime | None = None) -> dg.Definitions:
    """The loop's assets, job, sensor and schedule over `databases` (default: the environment's,
    FEEDBACK_LOOP_DATABASE_URL / FEEDBACK_LOOP_SOURCE_URL), with the clock stopped at `clock`
    (default: the real clock; a run can still set its own, `clock_run_config`)."""
    # Fewer, batched event writes per partition wherever this code location runs (event_levers.py).
    apply_event_levers()
    return dg.Definitions(
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
        resources={"databases": databases or databases_from_environment(), CLOCK_RESOURCE: LoopClock.at(clock)},
        # Each run is one chain of stages, so a process per step (the default multiprocess executor)
        # buys no parallelism and costs an interpreter start and import per stage (seconds each).
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location as deployed: the environment's databases and the real clock."""
    return build_definitions()
