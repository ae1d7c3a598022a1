"""Execution simulator: realistic, deterministic rows for `hook_executions` (demo and tests).

It lives apart from the production code path: nothing in the pipeline imports it.

    from feedback_loop_dagster.simulator import SimulationConfig, simulate_rows, simulate_to_database

    frame, malformed_kind = simulate_rows(SimulationConfig(patterns=4, days=7, seed=1, end_date=date(2025, 3, 1)))
    simulate_to_database(source_engine, SimulationConfig(patterns=6, days=14, per_day=200, seed=0))
"""

from feedback_loop_dagster.simulator.executions import (
    COLUMNS,
    ERROR_CLASSES,
    EXECUTION_STATUSES,
    MALFORMED_KINDS,
    NAMED_PATTERN_IDS,
    NASTY_PATTERN_IDS,
    PatternProfile,
    SimulatedExecutions,
    SimulationConfig,
    iter_simulated_chunks,
    pattern_ids,
    pattern_profiles,
    simulate_rows,
)
from feedback_loop_dagster.simulator.write import (
    SimulationConflict,
    simulate_to_database,
    write_executions,
)

__all__ = [
    "COLUMNS",
    "ERROR_CLASSES",
    "MALFORMED_KINDS",
    "NAMED_PATTERN_IDS",
    "NASTY_PATTERN_IDS",
    "EXECUTION_STATUSES",
    "PatternProfile",
    "SimulatedExecutions",
    "SimulationConfig",
    "SimulationConflict",
    "iter_simulated_chunks",
    "pattern_ids",
    "pattern_profiles",
    "simulate_rows",
    "simulate_to_database",
    "write_executions",
]
