"""`run` and `backfill`: the loop in-process, for one partition or over a range of windows.

A failed run or partition exits with status 2 after printing one line per failure with where to
look in the Dagster UI."""

from __future__ import annotations

import sys
from datetime import date, timedelta

import click

from feedback_loop_dagster.cli.common import (
    DATE,
    cell,
    echo_json,
    echo_table,
    ensure_warehouse,
    pattern_named,
    source_engine,
)
from feedback_loop_dagster.lib import partition_start, settings
from feedback_loop_dagster.lib.clock import utc_today
from feedback_loop_dagster.lib.errors import InvalidInput, NotFound


def _print_output(output) -> None:
    data = output.model_dump(mode="json")
    click.echo(f"pattern {data['pattern_id']!r}, window {data['metadata'].get('window')} "
               f"(analysis period from {data['metadata'].get('first_window')}): "
               + ("success" if data["success"] else "NOT successful"))
    simple = [k for k, v in data.items() if not isinstance(v, dict | list) and k not in ("pattern_id", "success")]
    width = max(len(k) for k in simple)
    for key in simple:
        click.echo(f"  {key.ljust(width)}  {cell(data[key])}")
    click.echo("  workflow_stages  " + ", ".join(f"{k}={v}" for k, v in data["workflow_stages"].items()))
    for name in ("baseline_metrics", "improved_metrics"):
        if data[name]:
            click.echo(f"  {name}  " + ", ".join(f"{k}={cell(v)}" for k, v in data[name].items()))
    if data["improvement_opportunities"]:
        click.echo("\nimprovements identified:")
        echo_table(data["improvement_opportunities"], ["id", "type", "description", "expected_delta", "risk", "status"])
    if data["validation_results"]:
        click.echo("\nA/B results:")
        echo_table(data["validation_results"], ["experiment_id", "kind", "window", "verdict", "p_value", "performance_delta",
                                                "n_control", "n_treatment"])
    for warning in data["warnings"]:
        click.echo(f"warning: {warning}")
    for error in data["errors"]:
        click.echo(f"error: {error}", err=True)


@click.command("run")
@click.option("--pattern", "pattern_id", required=True, help="Pattern id (as in hook_executions) or its partition key.")
@click.option("--window", type=DATE, help="Window (UTC day) to run [default: the pattern's latest complete window].")
@click.option("--json", "as_json", is_flag=True, help="Print the output contract as JSON.")
def run_command(pattern_id: str, window: date | None, as_json: bool) -> None:
    """Run one partition (PATTERN x WINDOW) through the whole graph, in-process, and print the
    output contract (the fields of the original ModelFeedbackLoopOutput). A failed run prints one
    `error:` line per failed stage of the partition, with where to look in the UI, and exits 2."""
    from feedback_loop_dagster.orchestrator import LoopRunner, run_loop

    pattern_id = pattern_named(pattern_id)
    output = run_loop(LoopRunner(), pattern_id, window, collect_period=False, gate_on_samples=False)
    if as_json:
        echo_json(output.model_dump(mode="json"))
    else:
        _print_output(output)
    if output.errors:
        sys.exit(2)


@click.command("backfill")
@click.option("--start", "start", type=DATE, required=True, help="First window (UTC day).")
@click.option("--end", "end", type=DATE, required=True, help="Last window (UTC day), inclusive.")
@click.option("--pattern", "pattern_ids", multiple=True,
              help="Pattern id or partition key; repeat for several [default: every pattern in the source].")
@click.option("--chunk-days", default=7, show_default=True, type=click.IntRange(min=1),
              help="Windows per range run (set-based: a run costs about the same for 1 or 30 windows).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def backfill_command(start: date, end: date, pattern_ids: tuple[str, ...], chunk_days: int, as_json: bool) -> None:
    """Materialise every asset for the patterns over [START, END] as range runs (oldest first),
    with a progress bar on stderr. Days are YYYY-MM-DD, `today`, `yesterday` or `today-N`.
    A partition that fails (e.g. too many invalid rows) fails alone and the backfill goes on; it
    ends with a table of what failed and why, and exits with status 2."""
    from feedback_loop_dagster.defs.in_process_runs.failures import run_failures
    from feedback_loop_dagster.lib.collect.source import pattern_ids as source_pattern_ids
    from feedback_loop_dagster.orchestrator import LoopRunner

    first, last = start, end
    if last < first:
        raise InvalidInput(f"--end {last} is before --start {first}")
    if first < date.fromisoformat(partition_start.window_start_date()):
        raise InvalidInput(f"--start {first} is before the first window {partition_start.window_start_date()} ({settings.START_DATE_ENV})")
    if last > utc_today():
        raise InvalidInput(f"--end {last} is in the future (today is {utc_today()})")
    ensure_warehouse()
    if pattern_ids:
        ids = list(dict.fromkeys(pattern_named(name) for name in pattern_ids))
    else:
        ids = source_pattern_ids(source_engine())
    if not ids:
        raise NotFound(f"no patterns: {settings.SOURCE_TABLE} is empty")
    runner = LoopRunner()
    keys = runner.register(ids)
    chunks = []
    day = first
    while day <= last:
        chunks.append((day, min(last, day + timedelta(days=chunk_days - 1))))
        day += timedelta(days=chunk_days)
    runs: list[str] = []
    with click.progressbar(chunks, label=f"backfill {len(ids)} pattern(s) x {(last - first).days + 1} window(s)",
                           file=sys.stderr, item_show_func=lambda c: f"{c[0]}..{c[1]}" if c else "") as bar:
        for chunk_first, chunk_last in bar:
            # A failed run or partition does not stop the backfill: the remaining chunks still run.
            _, run_ids = runner.materialize(sorted(keys.values()), chunk_first, chunk_last)
            runs += run_ids
    days = [first + timedelta(days=d) for d in range((last - first).days + 1)]
    failures = run_failures(runner.dagster_instance(), runner.warehouse, runs, [(k, d) for k in keys.values() for d in days])
    summary = {"patterns": sorted(ids), "start": first.isoformat(), "end": last.isoformat(), "runs": runs,
               "failed": [f.to_dict() for f in failures]}
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"materialised {len(ids)} pattern(s) x {len(days)} window(s) in {len(runs)} run(s)")
        if failures:
            click.echo(f"\n{len(failures)} failure(s); the other partitions went through every stage:")
            echo_table([{**f.to_dict(), "in the UI": f.ui} for f in failures],
                       ["partitions", "stage", "reason", "in the UI"], cut=None)
    if failures:
        sys.exit(2)
