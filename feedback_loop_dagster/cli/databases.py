"""`init-db` and `simulate`: the databases, and executions to try the loop on."""

from __future__ import annotations

import sys

import click

from feedback_loop_dagster.cli.common import engines
from feedback_loop_dagster.lib.clock import utc_today


@click.command("init-db")
def init_db() -> None:
    """Create or migrate hook_executions and the warehouse tables (idempotent); record the first
    day with executions, where the daily partitions start."""
    from feedback_loop_dagster.lib.storage.migrations import init_databases

    warehouse, source = engines()
    applied = init_databases(warehouse, source)
    for component, steps in applied.items():
        if steps:
            for step in steps:
                click.echo(f"{component}: applied migration {step.version} ({step.name})")
        else:
            click.echo(f"{component}: up to date")
    record_first_window(warehouse, source)


def record_first_window(warehouse, source) -> None:
    from feedback_loop_dagster.lib.partition_start import record_earliest_window

    first = record_earliest_window(warehouse, source)
    if first is not None:
        click.echo(f"daily partitions start at {first}, the first day with executions")


@click.command()
@click.option("--patterns", default=6, show_default=True, type=click.IntRange(min=1))
@click.option("--days", default=14, show_default=True, type=click.IntRange(min=1))
@click.option("--per-day", default=200, show_default=True, type=click.IntRange(min=1), help="Executions per pattern and day.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--malformed-share", default=0.02, show_default=True, type=click.FloatRange(0, 1))
@click.option("--end-date", type=click.DateTime(["%Y-%m-%d"]), help="Exclusive end of the simulated days [default: today, UTC].")
def simulate(patterns: int, days: int, per_day: int, seed: int, malformed_share: float, end_date) -> None:
    """Write deterministic, realistic executions into hook_executions (demo and test data)."""
    from feedback_loop_dagster.simulator import SimulationConfig, simulate_to_database

    _, source = engines()
    config = SimulationConfig(
        patterns=patterns,
        days=days,
        per_day=per_day,
        seed=seed,
        malformed_share=malformed_share,
        end_date=end_date.date() if end_date else utc_today(),
    )
    with click.progressbar(length=config.total_rows, label="simulating", file=sys.stderr) as bar:
        written = simulate_to_database(source, config, progress=bar.update)
    click.echo(f"wrote {written} executions for {patterns} pattern(s) over {days} day(s)")
    record_first_window(*engines())
