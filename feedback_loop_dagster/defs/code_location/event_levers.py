"""Dagster's own levers on what a partition costs in a range run, as this code location's defaults.

Dagster stores a planned and a materialisation event per asset and partition, one by one: in a
range run of 350 partitions through the seven assets that is about 5,000 events, and most of the
run's time on a PostgreSQL or SQLite instance. Both levers are environment variables read when
events are stored, so they are set here, in every process that loads the code location (the CLI,
the demo, the Python API, the code server and the run workers it starts).

dagster-daemon and dagster-webserver never import the code location (they load it through a code
server), yet they create the runs of sensors, schedules, backfills and the UI, and creating a run
writes its planned events: one per asset and partition without the levers, 8,000 for a range run
over 1,000 partitions. So they need the levers in their own environment, from this module:
`python -m feedback_loop_dagster.defs.code_location.event_levers` prints them as NAME=value lines for a shell or
env(1) (the Makefile's `ui`, deploy/entrypoint.sh), the integration harness imports them, and a
test holds the Helm values' env, whose daemon and webserver run Dagster's image, equal to them.
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


def unset_event_levers() -> dict[str, str]:
    """The levers the environment does not set already, with this code location's values."""
    return {name: value for name, value in EVENT_LEVERS.items() if name not in os.environ}


def apply_event_levers() -> None:
    """Sets each lever that the environment does not set already."""
    os.environ.update(unset_event_levers())


if __name__ == "__main__":
    for name, value in unset_event_levers().items():
        print(f"{name}={value}")
