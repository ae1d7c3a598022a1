"""`patterns sync` and `patterns list`: the patterns the loop knows and their partition keys."""

from __future__ import annotations

import click

from feedback_loop_dagster.cli.common import dagster_instance, echo_json, echo_table, engines, ensure_warehouse, warehouse_engine
from feedback_loop_dagster.cli.databases import record_first_window


@click.group("patterns")
def patterns() -> None:
    """Patterns and their partition keys."""


@patterns.command("sync")
def patterns_sync() -> None:
    """Register every pattern id found in the source as a partition of the `patterns` dimension,
    and record the first day with executions (where the daily partitions start)."""
    click.echo(f"{len(_sync_patterns())} pattern(s) registered")
    record_first_window(*engines())


def _sync_patterns() -> dict[str, str]:
    from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions
    from feedback_loop_dagster.lib.collect.source import pattern_ids
    from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids

    warehouse, source = engines()
    keys = register_pattern_ids(warehouse, pattern_ids(source))
    add_pattern_partitions(dagster_instance(), sorted(keys.values()))
    return keys


@patterns.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def patterns_list(as_json: bool) -> None:
    """Registered patterns: partition key, versions, active version, running experiment, policy."""
    from feedback_loop_dagster.lib.report.pattern_list import pattern_rows

    ensure_warehouse()
    with warehouse_engine().connect() as conn:
        rows = pattern_rows(conn)
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, empty="no patterns registered: run `feedback-loop patterns sync` or `feedback-loop backfill`")
