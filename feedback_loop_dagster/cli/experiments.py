"""`experiments list|start|stop`, `approve`, `reject` and `rollback`: experiments and the
decisions on them."""

from __future__ import annotations

from datetime import date

import click

from feedback_loop_dagster.cli.common import (
    DATE,
    echo_json,
    echo_table,
    ensure_warehouse,
    pattern_named,
    user_name,
    warehouse_engine,
)
from feedback_loop_dagster.lib.clock import utc_today
from feedback_loop_dagster.lib.errors import InvalidInput, NotFound


@click.group("experiments")
def experiments() -> None:
    """A/B experiments and post-promotion watches: list, start, stop."""


@experiments.command("list")
@click.option("--pattern", "pattern", help="Only this pattern (its id or partition key).")
@click.option("--status", type=click.Choice(["running", "concluded", "stopped", "all"]), default="all", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def experiments_list(pattern: str | None, status: str, as_json: bool) -> None:
    """Experiments with their latest look (verdict, the lead metric's effect in its unit with its
    interval, p-value, arm sizes) and any decision waiting for review (`approve ID` / `reject ID`)."""
    from feedback_loop_dagster.lib.report.experiment_list import experiment_rows

    ensure_warehouse()
    pattern_id = pattern_named(pattern) if pattern is not None else None
    with warehouse_engine().connect() as conn:
        rows = experiment_rows(conn, pattern_id, status)
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ["id", "pattern_id", "kind", "control", "treatment", "status", "outcome", "start_window",
                          "last_look", "verdict", "effect", "p_value", "n", "decision"], empty="no experiments")


@experiments.command("start")
@click.argument("pattern")
@click.argument("version")
@click.option("--split", type=click.FloatRange(0, 1, min_open=True, max_open=True), help="Treatment share [default: the policy's].")
@click.option("--start", "start", type=DATE, help="First window whose executions count [default: tomorrow, UTC].")
@click.option("--user", help="Who [default: $USER].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def experiments_start(pattern: str, version: str, split: float | None, start: date | None, user: str | None, as_json: bool) -> None:
    """Start an A/B experiment of VERSION (registered with `versions register`) against the active
    version of PATTERN (an id or a partition key), under the pattern's policy. Route traffic with
    feedback_loop_dagster.lib.experiment.assignment.assign_variant."""
    from feedback_loop_dagster.lib.operator_actions.experiments import start_manual_experiment

    pattern_id = pattern_named(pattern)
    with warehouse_engine().begin() as conn:
        experiment = start_manual_experiment(conn, pattern_id, version, user=user_name(user), traffic_split=split,
                                             start_window=start)
    result = {"id": experiment.id, "pattern_id": pattern_id, "control": experiment.control.version,
              "treatment": experiment.treatment.version, "traffic_split": experiment.traffic_split,
              "start_window": experiment.start_window.isoformat(), "policy": experiment.policy.name}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"started experiment {experiment.id}: {experiment.treatment.version} vs {experiment.control.version} "
                   f"of {pattern_id!r}, {experiment.traffic_split:.0%} to the treatment from {experiment.start_window}")


@experiments.command("stop")
@click.argument("experiment_id", type=int, required=False)
@click.option("--pattern", "pattern", help="Stop the running experiment of this pattern (id or partition key) instead.")
@click.option("--reason", default="stopped by hand", show_default=True)
@click.option("--user", help="Who [default: $USER].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def experiments_stop(experiment_id: int | None, pattern: str | None, reason: str, user: str | None, as_json: bool) -> None:
    """Stop a running experiment (EXPERIMENT_ID, or --pattern P's) without a verdict; the active
    version does not change."""
    from feedback_loop_dagster.lib.experiment.experiments import running_experiment, stop_experiment

    if (experiment_id is None) == (pattern is None):
        raise click.UsageError("give an EXPERIMENT_ID or --pattern, not both")
    ensure_warehouse()
    pattern_id = pattern_named(pattern) if pattern is not None else None
    with warehouse_engine().begin() as conn:
        if pattern_id is not None:
            running = running_experiment(conn, pattern_id)
            if running is None:
                raise NotFound(f"pattern {pattern_id!r} has no running experiment")
            experiment_id = running.id
        experiment = stop_experiment(conn, experiment_id, utc_today(), reason, user=user_name(user))
    if as_json:
        echo_json({"id": experiment.id, "status": experiment.status, "reason": experiment.reason})
    else:
        click.echo(f"stopped experiment {experiment.id} of {experiment.pattern_id!r}: {experiment.reason}")


def _review(decision_id: int, reviewer: str | None, as_json: bool, approve: bool) -> None:
    from feedback_loop_dagster.lib.operator_actions.reviews import approve as do_approve
    from feedback_loop_dagster.lib.operator_actions.reviews import dismiss

    ensure_warehouse()
    with warehouse_engine().begin() as conn:
        action = (do_approve if approve else dismiss)(conn, decision_id, user_name(reviewer))
    if action.action == "none":
        raise InvalidInput(f"decision {decision_id}: {action.reason}")
    result = {"decision": decision_id, "experiment": action.experiment_id, "pattern_id": action.pattern_id,
              "action": action.action, "reason": action.reason}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"decision {decision_id} ({action.pattern_id!r}, experiment {action.experiment_id}): {action.action}")


@click.command("approve")
@click.argument("decision_id", type=int)
@click.option("--reviewer", help="Who reviews [default: $USER].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def approve_command(decision_id: int, reviewer: str | None, as_json: bool) -> None:
    """Approve a decision waiting for review: promote its candidate (then watch it)."""
    _review(decision_id, reviewer, as_json, approve=True)


@click.command("reject")
@click.argument("decision_id", type=int)
@click.option("--reviewer", help="Who reviews [default: $USER].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def reject_command(decision_id: int, reviewer: str | None, as_json: bool) -> None:
    """Reject a decision waiting for review: the candidate is not promoted."""
    _review(decision_id, reviewer, as_json, approve=False)


@click.command("rollback")
@click.argument("pattern")
@click.option("--reason", default="rolled back by hand", show_default=True)
@click.option("--user", help="Who [default: $USER].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def rollback_command(pattern: str, reason: str, user: str | None, as_json: bool) -> None:
    """Roll back the promotion under watch of PATTERN (an id or a partition key): `active` returns
    to the version it replaced (recorded as `rolled_back_to`)."""
    from feedback_loop_dagster.lib.operator_actions.reviews import manual_rollback

    pattern_id = pattern_named(pattern)
    with warehouse_engine().begin() as conn:
        action = manual_rollback(conn, pattern_id, reason, user=user_name(user))
    if action.action == "none":
        raise InvalidInput(f"{pattern_id!r}: {action.reason}")
    result = {"pattern_id": pattern_id, "experiment": action.experiment_id, "action": action.action, "reason": action.reason}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"rolled back {pattern_id!r} (experiment {action.experiment_id}): {action.reason}")
