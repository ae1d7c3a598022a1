"""`feedback-loop`: set up the databases, simulate executions, and run the loop from the shell."""

from __future__ import annotations

import os
import re
import sys
from datetime import UTC, datetime

import click

from feedback_loop_dagster.lib import settings
from feedback_loop_dagster.lib.errors import ConfigError, UserError
from feedback_loop_dagster.lib.storage.database import get_engine


def _engines():
    return get_engine(settings.database_url()), get_engine(settings.source_url())


def _instance():
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(settings.dagster_home())
    return dg.DagsterInstance.get()


class ErrorLine(click.ClickException):
    """What the user sees of an error they can fix: one `error: ...` line, exit status 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


def _one_line(text: str) -> str:
    """A message on one line (a database driver's message may span several)."""
    return re.sub(r"\s*\n\s*", " ", text.strip())


def _usage_line(exc: click.UsageError) -> str:
    message = exc.format_message()
    message = message[:1].lower() + message[1:] if message[1:2].islower() else message
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return _one_line(message).rstrip(".") + hint


class LoopGroup(click.Group):
    """The error rules of README's command-line section, for every subcommand.

    A `UserError` (storage, registry, policy, input, unknown name) and a usage error (a bad
    option value, a missing argument) print one `error: ...` line and exit with status 1; with
    `--debug` a user error shows its traceback instead. Anything else is a bug: its traceback
    shows. A failed run exits with status 2 (the `run` and `backfill` commands).
    """

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise self._usage(exc) from exc

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise self._usage(exc) from exc
        except UserError as exc:
            if ctx.params.get("debug"):
                raise
            raise ErrorLine(_one_line(str(exc))) from exc

    @staticmethod
    def _usage(exc: click.UsageError) -> click.ClickException:
        if isinstance(exc, click.exceptions.NoArgsIsHelpError):
            exc.exit_code = 1  # a group without its subcommand: the help, as click shows it
            return exc
        return ErrorLine(_usage_line(exc))


@click.group(cls=LoopGroup)
@click.option("--debug", is_flag=True, envvar="FEEDBACK_LOOP_DEBUG",
              help="Show the full traceback of errors you can fix too (they print one line otherwise).")
def main(debug: bool) -> None:
    """Feedback loop for patterns, on Dagster."""


@main.command("init-db")
def init_db() -> None:
    """Create or migrate hook_executions and the warehouse tables (idempotent); record the first
    day with executions, where the daily partitions start."""
    from feedback_loop_dagster.lib.storage.migrations import init_databases

    warehouse, source = _engines()
    applied = init_databases(warehouse, source)
    for component, steps in applied.items():
        if steps:
            for step in steps:
                click.echo(f"{component}: applied migration {step.version} ({step.name})")
        else:
            click.echo(f"{component}: up to date")
    _record_first_window(warehouse, source)


def _record_first_window(warehouse, source) -> None:
    from feedback_loop_dagster.lib.partition_start import record_earliest_window

    first = record_earliest_window(warehouse, source)
    if first is not None:
        click.echo(f"daily partitions start at {first}, the first day with executions")


@main.command()
@click.option("--patterns", default=6, show_default=True, type=click.IntRange(min=1))
@click.option("--days", default=14, show_default=True, type=click.IntRange(min=1))
@click.option("--per-day", default=200, show_default=True, type=click.IntRange(min=1), help="Executions per pattern and day.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--malformed-share", default=0.02, show_default=True, type=click.FloatRange(0, 1))
@click.option("--end-date", type=click.DateTime(["%Y-%m-%d"]), help="Exclusive end of the simulated days [default: today, UTC].")
def simulate(patterns: int, days: int, per_day: int, seed: int, malformed_share: float, end_date) -> None:
    """Write deterministic, realistic executions into hook_executions (demo and test data)."""
    from feedback_loop_dagster.simulator import SimulationConfig, simulate_to_database

    _, source = _engines()
    config = SimulationConfig(
        patterns=patterns,
        days=days,
        per_day=per_day,
        seed=seed,
        malformed_share=malformed_share,
        end_date=end_date.date() if end_date else datetime.now(UTC).date(),
    )
    with click.progressbar(length=config.total_rows, label="simulating", file=sys.stderr) as bar:
        written = simulate_to_database(source, config, progress=bar.update)
    click.echo(f"wrote {written} executions for {patterns} pattern(s) over {days} day(s)")
    _record_first_window(*_engines())


@main.group()
def patterns() -> None:
    """Patterns and their partition keys."""


@patterns.command("sync")
def patterns_sync() -> None:
    """Register every pattern id found in the source as a partition of the `patterns` dimension,
    and record the first day with executions (where the daily partitions start)."""
    click.echo(f"{len(_sync_patterns())} pattern(s) registered")
    _record_first_window(*_engines())


def _sync_patterns() -> dict[str, str]:
    import sqlalchemy as sa

    from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions
    from feedback_loop_dagster.lib.collect.collector import source_columns
    from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids

    warehouse, source = _engines()
    source_columns(source)
    with source.connect() as conn:
        ids = conn.scalars(sa.text(f'SELECT DISTINCT pattern_id FROM "{settings.SOURCE_TABLE}"')).all()
    keys = register_pattern_ids(warehouse, [i for i in ids if i])
    add_pattern_partitions(_instance(), sorted(keys.values()))
    return keys


@main.command()
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

    warehouse, source = _engines()
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
    rows = run_demo(build_definitions(), _instance(), warehouse, source, days=days, seed=seed, per_day=per_day, progress=click.echo)
    click.echo("\n" + format_table(rows))
    _print_collection_summary(warehouse)
    click.echo(f"\ndemo took {time.perf_counter() - started:.0f}s. Browse it: make ui  (Dagster instance in {settings.dagster_home()})")
    missed = [r.pattern_id for r in rows if not r.match]
    if missed:
        click.echo(f"planted outcome not met for: {', '.join(missed)}", err=True)
        sys.exit(1)


def _print_collection_summary(warehouse) -> None:
    """Per pattern: windows collected, source / valid / quarantined rows; then the quarantine reasons."""
    import sqlalchemy as sa

    from feedback_loop_dagster.lib.storage.tables import feedback_partitions as fp
    from feedback_loop_dagster.lib.storage.tables import feedback_quarantine as fq

    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.select(
                fp.c.pattern_id,
                sa.func.count().label("windows"),
                sa.func.sum(fp.c.source_rows),
                sa.func.sum(fp.c.valid_rows),
                sa.func.sum(fp.c.quarantined_rows),
            )
            .group_by(fp.c.pattern_id)
            .order_by(fp.c.pattern_id)
        ).all()
        reasons = conn.execute(
            sa.select(fq.c.reason, sa.func.count()).group_by(fq.c.reason).order_by(sa.func.count().desc())
        ).all()
    click.echo(f"\n{'pattern':<32} {'windows':>7} {'source':>8} {'valid':>8} {'quarantined':>11}")
    for pattern_id, windows, total, valid, bad in rows:
        click.echo(f"{pattern_id!r:<32} {windows:>7} {total:>8} {valid:>8} {bad:>11}")
    click.echo("\nquarantine reasons:")
    for reason, count in reasons:
        click.echo(f"  {count:>5}  {reason}")


# run, backfill, patterns list, policies, versions, experiments, approve, reject, rollback, lineage
from feedback_loop_dagster.commands import register as _register_loop_commands  # noqa: E402

_register_loop_commands(main, patterns)

# check-config: the deployment's environment (docs/deploy.md)
from feedback_loop_dagster.deploy_check import check_config as _check_config  # noqa: E402

main.add_command(_check_config)


if __name__ == "__main__":
    main()
