"""Dagster's own levers on what a partition costs in a range run, as this code location's defaults.

Dagster stores a planned and a materialisation event per asset and partition, one by one: in a
range run of 350 partitions through the seven assets that is about 5,000 events, and most of the
run's time on a PostgreSQL or SQLite instance. Both levers are environment variables read when
events are stored, so they are set here, in every process that loads the code location (the CLI,
the demo, the Python API, run workers); dagster-daemon and dagster-webserver, which create the
runs of backfills, sensors and the UI, need them in their own environment (docs/deploy.md).
A value already in the environment wins. Measured in benchmarks/loop_graph.py (DESIGN.md 1).
"""

from __future__ import annotations

import os

EVENT_LEVERS = {
    # The materialisation events of one output (every partition of a range run) are written in
    # batches of up to this many, one INSERT each where the event log implements it
    # (dagster-postgres); SQLite's event log still writes them one by one.
    "DAGSTER_EVENT_BATCH_SIZE": "1000",
    # One planned event per asset and run, with the run's partition subset, instead of one per
    # partition. The cost: Dagster then no longer paints the partitions of a run in progress, or
    # of a run that failed as a whole, on the asset's partition bar (the run itself shows both);
    # a partition that fails alone is shown by its own check and metadata (defs/per_partition/loop.py).
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
}


def apply_event_levers() -> None:
    """Sets each lever that the environment does not set already."""
    for name, value in EVENT_LEVERS.items():
        os.environ.setdefault(name, value)
