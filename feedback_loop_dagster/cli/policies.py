"""`policies show` and `policies set`: the experiment policy each pattern runs under."""

from __future__ import annotations

import json

import click

from feedback_loop_dagster.cli.common import cell, echo_json, echo_table, pattern_named, register_pattern, warehouse_engine
from feedback_loop_dagster.lib.errors import InvalidInput


@click.group("policies")
def policies() -> None:
    """Per-pattern experiment policies (presets: production, development, quality, monitoring)."""


@policies.command("show")
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def policies_show(pattern: str | None, as_json: bool) -> None:
    """The policy PATTERN (an id or a partition key) runs under: its own, else the default preset.
    Without a pattern, the presets."""
    from feedback_loop_dagster.lib.registry.policies import DEFAULT_POLICY_ENV, get_policy
    from feedback_loop_dagster.lib.stats import PRESETS

    if pattern is None:
        rows = [p.model_dump(mode="json") for p in PRESETS.values()]
        if as_json:
            echo_json(rows)
        else:
            echo_table(rows, ["name", "feedback_type", "auto_apply_threshold", "min_sample_size", "significance_level",
                              "time_window_days", "enable_ab_testing", "auto_apply", "require_review"])
            click.echo(f"default for patterns without a policy: ${DEFAULT_POLICY_ENV} or production")
        return
    pattern_id = pattern_named(pattern)
    with warehouse_engine().connect() as conn:
        policy = get_policy(conn, pattern_id)
    data = policy.model_dump(mode="json")
    if as_json:
        echo_json(data)
    else:
        for key, value in data.items():
            click.echo(f"{key:<26} {cell(value)}")


@policies.command("set")
@click.argument("pattern")
@click.option("--preset", help="Start from this preset [default: the pattern's current policy].")
@click.option("--set", "assignments", multiple=True, metavar="FIELD=VALUE",
              help="Change a field (JSON value, e.g. min_sample_size=50, enable_ab_testing=false); repeatable.")
@click.option("--create", is_flag=True, help="Create PATTERN if no pattern has this id or partition key yet.")
def policies_set(pattern: str, preset: str | None, assignments: tuple[str, ...], create: bool) -> None:
    """Store PATTERN's policy (PATTERN: an id or a partition key), validated by the engine (a bad
    field is named in the error). Running experiments keep the policy they started with."""
    from pydantic import ValidationError

    from feedback_loop_dagster.lib.registry.policies import get_policy, set_policy
    from feedback_loop_dagster.lib.stats import PRESET_NAMES, Policy, get_preset

    if preset is not None and preset not in PRESET_NAMES:
        raise InvalidInput(f"unknown preset {preset!r}: choose one of {', '.join(PRESET_NAMES)}")
    changes = {}
    for item in assignments:
        field, sep, raw = item.partition("=")
        if not sep or not field.strip():
            raise InvalidInput(f"--set takes FIELD=VALUE, got {item!r}")
        try:
            changes[field.strip()] = json.loads(raw)  # the user's --set value, not a stored document
        except json.JSONDecodeError:
            changes[field.strip()] = raw
    pattern_id = pattern_named(pattern, create=create)
    with warehouse_engine().begin() as conn:
        base = get_preset(preset) if preset else get_policy(conn, pattern_id)
        try:
            policy = Policy.model_validate({**base.model_dump(), **changes})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'policy'}: {e['msg']}" for e in exc.errors())
            raise InvalidInput(f"invalid policy for {pattern_id!r}: {problems}") from None
        set_policy(conn, pattern_id, policy)
    register_pattern(pattern_id)
    click.echo(f"policy of {pattern_id!r}: {policy.name}" + (f" with {', '.join(assignments)}" if assignments else ""))
