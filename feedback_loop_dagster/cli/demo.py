"""`demo`: the time-stepped simulation with planted truths, the loop run after every simulated day."""

from __future__ import annotations

import sys

import click

from feedback_loop_dagster.cli.common import dagster_instance, engines
from feedback_loop_dagster.lib import settings
from feedback_loop_dagster.lib.errors import ConfigError


@click.command("demo")
@click.option("--days", default=21, show_default=True, type=click.IntRange(min=1), help="Simulated days, ending yesterday (UTC).")
@click.option("--per-day", default=500, show_default=True, type=click.IntRange(min=10), help="Executions per pattern and day.")
@click.option("--seed", default=7, show_default=True, type=click.IntRange(min=0))
def demo(days: int, per_day: int, seed: int) -> None:
    """Time-stepped demo: six patterns with planted truths, the loop run after every simulated day.

    Each day's traffic follows the registry (the active version, or the running experiment's
    arms); the table at the end compares every decision with the planted truth. Needs empty
    databases: it refuses, and changes nothing, when they already hold executions or versions
    (`make clean` starts over). Exit status 1 when a planted outcome is not met.
    """
    import time

    from feedback_loop_dagster.definitions import build_definitions
    from feedback_loop_dagster.lib.storage.database import redact
    from feedback_loop_dagster.lib.storage.migrations import init_databases
    from feedback_loop_dagster.simulator.demo import format_table, has_demo_data, run_demo

    warehouse, source = engines()
    init_databases(warehouse, source)
    existing = has_demo_data(warehouse, source)
    if existing:
        raise ConfigError(
            f"{redact(settings.database_url())} already holds {existing}; the demo starts from empty "
            "databases and never deletes data: run `make clean` (removes data/ and .dagster_home/) or "
            f"point {settings.DATABASE_URL_ENV} at an empty database"
        )
    started = time.perf_counter()
    click.echo(f"simulating {days} days x 6 patterns x {per_day} executions (seed {seed}); the loop runs after each day")
    rows = run_demo(build_definitions(), dagster_instance(), warehouse, source, days=days, seed=seed, per_day=per_day, progress=click.echo)
    click.echo("\n" + format_table(rows))
    print_collection_summary(warehouse)
    click.echo(f"\ndemo took {time.perf_counter() - started:.0f}s. Browse it: make ui  (Dagster instance in {settings.dagster_home()})")
    missed = [r.pattern_id for r in rows if not r.match]
    if missed:
        click.echo(f"planted outcome not met for: {', '.join(missed)}", err=True)
        sys.exit(1)


def print_collection_summary(warehouse) -> None:
    """Per pattern: windows collected, source / valid / quarantined rows; then the quarantine reasons."""
    from feedback_loop_dagster.lib.report.collection import collection_by_pattern, quarantine_reasons

    with warehouse.connect() as conn:
        rows = collection_by_pattern(conn)
        reasons = quarantine_reasons(conn)
    click.echo(f"\n{'pattern':<32} {'windows':>7} {'source':>8} {'valid':>8} {'quarantined':>11}")
    for r in rows:
        click.echo(f"{r.pattern_id!r:<32} {r.windows:>7} {r.source_rows:>8} {r.valid_rows:>8} {r.quarantined_rows:>11}")
    click.echo("\nquarantine reasons:")
    for reason, count in reasons:
        click.echo(f"  {count:>5}  {reason}")
