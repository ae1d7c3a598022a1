"""The loop's `feedback-loop` commands: run, backfill, patterns list, policies, versions,
experiments, approve, reject, rollback, lineage, health. `cli.py` registers them on its group (`register`).

Every command prints a human-readable table by default and JSON with `--json` (lineage:
`--format json`); errors a user can fix print one `error: ...` line and exit with status 1
(cli.LoopGroup); a failed run exits with status 2. A pattern is named by its id or its partition
key (`_pattern`).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import click

from feedback_loop_dagster.lib import partition_start, settings
from feedback_loop_dagster.lib.errors import InvalidInput, NotFound

class Day(click.ParamType):
    """A UTC day: YYYY-MM-DD, `today`, `yesterday` or `today-N` (N days ago)."""

    name = "day"

    def convert(self, value, param, ctx):
        if isinstance(value, date):
            return value
        text = str(value).strip().lower()
        today = datetime.now(UTC).date()
        if text == "today":
            return today
        if text == "yesterday":
            return today - timedelta(days=1)
        if text.startswith("today-") and text[6:].isdigit():
            return today - timedelta(days=int(text[6:]))
        try:
            return date.fromisoformat(text)
        except ValueError:
            self.fail(f"{value!r} is not a day: use YYYY-MM-DD, today, yesterday or today-N", param, ctx)

    def get_metavar(self, param, ctx=None):
        return "DAY"


DATE = Day()


# --- helpers ---------------------------------------------------------------------------------


def _warehouse():
    from feedback_loop_dagster.lib.storage.database import get_engine

    return get_engine(settings.database_url())


def _source():
    from feedback_loop_dagster.lib.storage.database import get_engine

    return get_engine(settings.source_url())


def _user(value: str | None) -> str:
    if value:
        return value
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:  # no user name in a container: still say who did it
        return "cli"


def _today() -> date:
    return datetime.now(UTC).date()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) >= 1 else f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def echo_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, empty: str = "(none)", cut: int | None = 60
) -> None:
    """A plain aligned table; long cells are cut at `cut` characters (None: never)."""
    if not rows:
        click.echo(empty)
        return
    columns = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    if cut is not None:
        cells = [[c if len(c) <= cut else c[: cut - 3] + "..." for c in row] for row in cells]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def _ensure_warehouse() -> None:
    """A clear error instead of a SQL one when `feedback-loop init-db` has not been run."""
    import sqlalchemy as sa

    from feedback_loop_dagster.lib.storage.database import StorageError

    engine = _warehouse()
    if not sa.inspect(engine).has_table("pattern_versions"):
        raise StorageError(f"the warehouse at {engine.url.render_as_string(hide_password=True)} has no loop tables: run `feedback-loop init-db`")


def _pattern(name: str, create: bool = False) -> str:
    """The original id of the pattern NAME names (its id or its partition key); with `create`, an
    unknown NAME is a new pattern's id (`_register_pattern` it once its first change is written).
    One rule for every command (lib/registry/patterns.py)."""
    from feedback_loop_dagster.lib.registry.patterns import resolve_pattern

    _ensure_warehouse()
    return resolve_pattern(_warehouse(), name, source=_source(), create=create)


def _register_pattern(pattern_id: str) -> None:
    """List the pattern in the registry (`patterns list`) with its partition key (idempotent)."""
    from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids

    register_pattern_ids(_warehouse(), [pattern_id])


# --- run and backfill ------------------------------------------------------------------------


def _print_output(output) -> None:
    data = output.model_dump(mode="json")
    click.echo(f"pattern {data['pattern_id']!r}, window {data['metadata'].get('window')} "
               f"(analysis period from {data['metadata'].get('first_window')}): "
               + ("success" if data["success"] else "NOT successful"))
    simple = [k for k, v in data.items() if not isinstance(v, dict | list) and k not in ("pattern_id", "success")]
    width = max(len(k) for k in simple)
    for key in simple:
        click.echo(f"  {key.ljust(width)}  {_cell(data[key])}")
    click.echo("  workflow_stages  " + ", ".join(f"{k}={v}" for k, v in data["workflow_stages"].items()))
    for name in ("baseline_metrics", "improved_metrics"):
        if data[name]:
            click.echo(f"  {name}  " + ", ".join(f"{k}={_cell(v)}" for k, v in data[name].items()))
    if data["improvement_opportunities"]:
        click.echo("\nimprovements identified:")
        echo_table(data["improvement_opportunities"], ["id", "type", "description", "expected", "risk", "status"])
    if data["validation_results"]:
        click.echo("\nA/B results:")
        echo_table(data["validation_results"], ["experiment_id", "kind", "window", "verdict", "effect", "p_value",
                                                "n_control", "n_treatment"], cut=None)
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

    pattern_id = _pattern(pattern_id)
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
@click.option("--pattern", "pattern_ids", multiple=True, help="Pattern id or partition key; repeat for several [default: every pattern in the source].")
@click.option("--chunk-days", default=7, show_default=True, type=click.IntRange(min=1),
              help="Windows per range run (set-based: a run costs about the same for 1 or 30 windows).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def backfill_command(start: date, end: date, pattern_ids: tuple[str, ...], chunk_days: int, as_json: bool) -> None:
    """Materialise every asset for the patterns over [START, END] as range runs (oldest first),
    with a progress bar on stderr. Days are YYYY-MM-DD, `today`, `yesterday` or `today-N`.
    A partition that fails (e.g. too many invalid rows) fails alone and the backfill goes on; it
    ends with a table of what failed and why, and exits with status 2."""
    from feedback_loop_dagster.defs.in_process_runs.failures import run_failures
    from feedback_loop_dagster.orchestrator import LoopRunner

    first, last = start, end
    if last < first:
        raise InvalidInput(f"--end {last} is before --start {first}")
    if first < date.fromisoformat(partition_start.window_start_date()):
        raise InvalidInput(f"--start {first} is before the first window {partition_start.window_start_date()} ({settings.START_DATE_ENV})")
    if last > _today():
        raise InvalidInput(f"--end {last} is in the future (today is {_today()})")
    _ensure_warehouse()
    if pattern_ids:
        ids = list(dict.fromkeys(_pattern(name) for name in pattern_ids))
    else:
        ids = _source_pattern_ids()
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


def _source_pattern_ids() -> list[str]:
    import sqlalchemy as sa

    from feedback_loop_dagster.lib.collect.collector import source_columns

    source_columns(_source())
    with _source().connect() as conn:
        ids = conn.scalars(sa.text(f'SELECT DISTINCT pattern_id FROM "{settings.SOURCE_TABLE}"')).all()
    return sorted(i for i in ids if i)


# --- patterns --------------------------------------------------------------------------------


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def patterns_list(as_json: bool) -> None:
    """Registered patterns: partition key, versions, active version, running experiment, policy."""
    import sqlalchemy as sa

    from feedback_loop_dagster.lib.registry.policies import default_policy
    from feedback_loop_dagster.lib.storage import tables as t

    _ensure_warehouse()
    with _warehouse().connect() as conn:
        patterns = conn.execute(sa.select(t.patterns.c.pattern_id, t.patterns.c.partition_key).order_by(t.patterns.c.pattern_id)).all()
        counts = dict(conn.execute(sa.select(t.pattern_versions.c.pattern_id, sa.func.count()).group_by(t.pattern_versions.c.pattern_id)).all())
        labels = {
            (p, label): v
            for p, label, v in conn.execute(
                sa.select(t.pattern_labels.c.pattern_id, t.pattern_labels.c.label, t.pattern_versions.c.version).join(
                    t.pattern_versions, t.pattern_versions.c.id == t.pattern_labels.c.version_id
                )
            )
        }
        running = {p: f"#{i} ({k})" for i, p, k in conn.execute(
            sa.select(t.experiments.c.id, t.experiments.c.pattern_id, t.experiments.c.kind).where(t.experiments.c.status == "running"))}
        policies = {p: json.loads(text).get("name") for p, text in conn.execute(sa.select(t.pattern_policies.c.pattern_id, t.pattern_policies.c.policy))}
        collected = dict(conn.execute(
            sa.select(t.feedback_partitions.c.pattern_id, sa.func.max(t.feedback_partitions.c.window_start)).group_by(t.feedback_partitions.c.pattern_id)).all())
    default = default_policy().name
    rows = [
        {
            "pattern_id": p,
            "partition_key": key,
            "versions": counts.get(p, 0),
            "active": labels.get((p, "active")),
            "candidate": labels.get((p, "candidate")),
            "running_experiment": running.get(p),
            "policy": policies.get(p) or f"{default} (default)",
            "last_window": collected[p].isoformat() if collected.get(p) else None,
        }
        for p, key in patterns
    ]
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, empty="no patterns registered: run `feedback-loop patterns sync` or `feedback-loop backfill`")


# --- policies --------------------------------------------------------------------------------


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
    pattern_id = _pattern(pattern)
    with _warehouse().connect() as conn:
        policy = get_policy(conn, pattern_id)
    data = policy.model_dump(mode="json")
    if as_json:
        echo_json(data)
    else:
        for key, value in data.items():
            click.echo(f"{key:<26} {_cell(value)}")


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
            changes[field.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            changes[field.strip()] = raw
    pattern_id = _pattern(pattern, create=create)
    with _warehouse().begin() as conn:
        base = get_preset(preset) if preset else get_policy(conn, pattern_id)
        try:
            policy = Policy.model_validate({**base.model_dump(), **changes})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'policy'}: {e['msg']}" for e in exc.errors())
            raise InvalidInput(f"invalid policy for {pattern_id!r}: {problems}") from None
        set_policy(conn, pattern_id, policy)
    _register_pattern(pattern_id)
    click.echo(f"policy of {pattern_id!r}: {policy.name}" + (f" with {', '.join(assignments)}" if assignments else ""))


# --- versions --------------------------------------------------------------------------------


@click.group("versions")
def versions() -> None:
    """Pattern versions: list, show, register, diff."""


def _graph(pattern: str, as_of: date | None = None):
    """(pattern id, its version graph as of `as_of`) for the pattern PATTERN names."""
    from feedback_loop_dagster.lib.lineage import lineage_graph

    pattern_id = _pattern(pattern)
    with _warehouse().connect() as conn:
        graph = lineage_graph(conn, pattern_id, as_of)
    if not graph.versions(pattern_id):
        raise NotFound(f"pattern {pattern_id!r} has no versions" + (f" as of {as_of}" if as_of else "")
                       + " (versions appear once its executions are analysed, or with `versions register`)")
    return pattern_id, graph


def _node(graph, pattern_id: str, name: str):
    """A version by name; `active` and `candidate` name the versions with that status."""
    if name in ("active", "candidate"):
        found = [n for n in graph.versions(pattern_id) if n.status == name]
        if not found:
            raise NotFound(f"pattern {pattern_id!r} has no {name} version")
        return found[0]
    return graph.node((pattern_id, name))


@versions.command("list")
@click.argument("pattern")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def versions_list(pattern: str, as_json: bool) -> None:
    """Every version of PATTERN (an id or a partition key) with its status, parent, source and usage."""
    pattern_id, graph = _graph(pattern)
    rows = sorted((r for r in graph.node_rows() if r["pattern_id"] == pattern_id), key=lambda r: r["created_at"] or "")
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ["version", "status", "parent", "source", "created_at", "usage_total", "success_rate", "why"])


@versions.command("show")
@click.argument("pattern")
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def versions_show(pattern: str, version: str, as_json: bool) -> None:
    """One version of PATTERN (an id or a partition key): config, status, lineage path from the
    root, and its edges with evidence. VERSION may also be `active` or `candidate`."""
    pattern_id, graph = _graph(pattern)
    node = _node(graph, pattern_id, version)
    path = [n.version for n in graph.get_lineage_path(node)]
    edges = [row for row in graph.edge_rows() if node.label in (row["from"], row["to"])]
    if as_json:
        echo_json({**node.to_dict(), "lineage_path": path, "edges": edges})
        return
    click.echo(f"{node.label}  status={node.status} ({node.status_reason})")
    click.echo(f"  source={node.source} created_by={node.created_by} created_at={node.created_at}")
    click.echo(f"  usage: {node.usage_total} executions in total, {node.usage_count} in {graph.usage_window}"
               + (f", {node.success_rate:.1%} successful" if node.success_rate is not None else ""))
    click.echo(f"  lineage path: {' -> '.join(path)}")
    click.echo("  config:")
    for line in json.dumps(node.config, indent=2, sort_keys=True).splitlines():
        click.echo(f"    {line}")
    click.echo("  edges:")
    echo_table(edges, ["from", "edge", "to", "window", "effect", "evidence"], empty="    (none)")


def _json_object(text: str | None, what: str) -> dict | None:
    if text is None:
        return None
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise InvalidInput(f"cannot read {what} file {text[1:]!r}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


@versions.command("register")
@click.argument("pattern")
@click.argument("version")
@click.option("--config", "config_text", help="The whole config as a JSON object, or @file.json.")
@click.option("--patch", "patch_text", help="A JSON merge patch on the parent's config, or @file.json.")
@click.option("--parent", help="Parent version [default: the active version].")
@click.option("--activate", is_flag=True, help="Make it the active version now (recorded as `replaced_by`).")
@click.option("--reason", default="", help="Why (stored with the activation).")
@click.option("--user", help="Who [default: $USER].")
@click.option("--create", is_flag=True, help="Create PATTERN if no pattern has this id or partition key yet.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def versions_register(pattern, version, config_text, patch_text, parent, activate, reason, user, create, as_json) -> None:
    """Register VERSION of PATTERN (an id or a partition key) by hand. Versions are immutable
    (the same name with another config is refused); a name is 1-64 letters, digits and `._+-`,
    starting with a letter or digit. Start an experiment with it (`experiments start`) or
    `--activate` it directly."""
    from feedback_loop_dagster.lib.operator_actions.versions import activate_version, register_manual_version

    config, patch = _json_object(config_text, "--config"), _json_object(patch_text, "--patch")
    pattern_id = _pattern(pattern, create=create)
    who = _user(user)
    with _warehouse().begin() as conn:
        registered = register_manual_version(
            conn, pattern_id, version, config=config, patch=patch, parent=parent, user=who,
        )
        if activate:
            activate_version(conn, pattern_id, version, user=who, reason=reason)
    _register_pattern(pattern_id)
    result = {"pattern_id": pattern_id, "version": registered.version, "id": registered.id, "config": registered.config,
              "parent_id": registered.parent_id, "active": activate}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"registered {registered.label} (id {registered.id})" + (" and made it active" if activate else ""))


@versions.command("diff")
@click.argument("pattern")
@click.argument("version_a")
@click.argument("version_b")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def versions_diff(pattern: str, version_a: str, version_b: str, as_json: bool) -> None:
    """How VERSION_B's config differs from VERSION_A's (changed keys and the JSON merge patch) in
    PATTERN (an id or a partition key). Either may be `active` or `candidate`."""
    pattern_id, graph = _graph(pattern)
    diff = graph.diff(_node(graph, pattern_id, version_a), _node(graph, pattern_id, version_b))
    if as_json:
        echo_json(diff.to_dict())
        return
    if not diff.changes:
        click.echo(f"{version_a} and {version_b} have the same config")
        return
    echo_table(diff.changes, ["path", "before", "after"])
    click.echo(f"merge patch: {json.dumps(diff.patch, sort_keys=True)}")


# --- experiments and decisions ---------------------------------------------------------------


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
    import sqlalchemy as sa

    from feedback_loop_dagster.lib.report.experiment import lead_effect
    from feedback_loop_dagster.lib.storage import tables as t

    _ensure_warehouse()
    pattern_id = _pattern(pattern) if pattern is not None else None
    x, v, ab, d = t.experiments, t.pattern_versions, t.ab_results, t.decisions
    control, treatment = v.alias("control"), v.alias("treatment")
    query = (
        sa.select(x.c.id, x.c.pattern_id, x.c.kind, control.c.version.label("control"), treatment.c.version.label("treatment"),
                  x.c.traffic_split, x.c.start_window, x.c.status, x.c.outcome, x.c.concluded_window, x.c.created_by)
        .join(control, control.c.id == x.c.control_version_id)
        .join(treatment, treatment.c.id == x.c.treatment_version_id)
        .order_by(x.c.id)
    )
    if pattern_id is not None:
        query = query.where(x.c.pattern_id == pattern_id)
    if status != "all":
        query = query.where(x.c.status == status)
    with _warehouse().connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
        ids = [r["id"] for r in rows]
        latest = {}
        if ids:
            newest = sa.select(ab.c.experiment_id, sa.func.max(ab.c.window_start).label("w")).where(
                ab.c.experiment_id.in_(ids)).group_by(ab.c.experiment_id).subquery()
            for r in conn.execute(
                sa.select(ab.c.experiment_id, ab.c.window_start, ab.c.decision, ab.c.p_value, ab.c.performance_delta,
                          ab.c.control_n, ab.c.treatment_n, ab.c.result)
                .join(newest, sa.and_(newest.c.experiment_id == ab.c.experiment_id, newest.c.w == ab.c.window_start))
            ).mappings():
                latest[r["experiment_id"]] = r
        decisions = {e: (i, a, s) for i, e, a, s in conn.execute(
            sa.select(d.c.id, d.c.experiment_id, d.c.action, d.c.status).where(d.c.experiment_id.in_(ids)))} if ids else {}
    for r in rows:
        look = latest.get(r["id"])
        r["start_window"] = r["start_window"].isoformat()
        r["concluded_window"] = r["concluded_window"].isoformat() if r["concluded_window"] else None
        r["last_look"] = look["window_start"].isoformat() if look else None
        r["verdict"] = look["decision"] if look else None
        r["p_value"] = look["p_value"] if look else None
        r["effect"] = lead_effect(json.loads(look["result"])) if look else None
        r["performance_delta"] = look["performance_delta"] if look else None  # the seed contract's field
        r["n"] = f"{look['control_n']}/{look['treatment_n']}" if look else None
        decision = decisions.get(r["id"])
        r["decision"] = f"#{decision[0]} {decision[1]} {decision[2]}" if decision else None
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows, ["id", "pattern_id", "kind", "control", "treatment", "status", "outcome", "start_window",
                          "last_look", "verdict", "effect", "p_value", "n", "decision"], empty="no experiments")


@experiments.command("show")
@click.argument("experiment_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def experiments_show(experiment_id: int, as_json: bool) -> None:
    """One experiment: its verdict, each metric's effect and interval in its unit with p and n,
    guardrails with their margins, what the candidate changed (its JSON merge patch), how the
    verdict went, and the Dagster partition that shows its last look."""
    from feedback_loop_dagster.lib.report.experiment import experiment_report, patch_text

    _ensure_warehouse()
    with _warehouse().connect() as conn:
        report = experiment_report(conn, experiment_id)
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(report.headline)
    click.echo(f"pattern {report.pattern_id!r}, {report.status}{f' ({report.outcome})' if report.outcome else ''}, "
               f"from {report.start_window}, {report.traffic_split:.0%} treatment; last look {report.last_look or '-'}")
    click.echo(f"patch: {patch_text(report.patch)}")
    click.echo("")
    echo_table([vars(m) for m in report.metrics], ["metric", "role", "effect", "p", "n", "guardrail"], empty="no look yet", cut=None)
    click.echo("")
    echo_table([vars(e) for e in report.history], ["window", "event", "detail"], cut=None)
    if report.partition:
        click.echo(f"\nin Dagster: {report.partition_path}  (asset ab_test_results, partition {report.partition})")


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

    pattern_id = _pattern(pattern)
    with _warehouse().begin() as conn:
        experiment = start_manual_experiment(conn, pattern_id, version, user=_user(user), traffic_split=split,
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
    _ensure_warehouse()
    pattern_id = _pattern(pattern) if pattern is not None else None
    with _warehouse().begin() as conn:
        if pattern_id is not None:
            running = running_experiment(conn, pattern_id)
            if running is None:
                raise NotFound(f"pattern {pattern_id!r} has no running experiment")
            experiment_id = running.id
        experiment = stop_experiment(conn, experiment_id, _today(), reason, user=_user(user))
    if as_json:
        echo_json({"id": experiment.id, "status": experiment.status, "reason": experiment.reason})
    else:
        click.echo(f"stopped experiment {experiment.id} of {experiment.pattern_id!r}: {experiment.reason}")


def _review(decision_id: int, reviewer: str | None, as_json: bool, approve: bool) -> None:
    from feedback_loop_dagster.lib.operator_actions.reviews import approve as do_approve
    from feedback_loop_dagster.lib.operator_actions.reviews import dismiss

    _ensure_warehouse()
    with _warehouse().begin() as conn:
        action = (do_approve if approve else dismiss)(conn, decision_id, _user(reviewer))
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

    pattern_id = _pattern(pattern)
    with _warehouse().begin() as conn:
        action = manual_rollback(conn, pattern_id, reason, user=_user(user))
    if action.action == "none":
        raise InvalidInput(f"{pattern_id!r}: {action.reason}")
    result = {"pattern_id": pattern_id, "experiment": action.experiment_id, "action": action.action, "reason": action.reason}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"rolled back {pattern_id!r} (experiment {action.experiment_id}): {action.reason}")


# --- lineage ---------------------------------------------------------------------------------


@click.command("lineage")
@click.argument("pattern")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "mermaid"]), default="table", show_default=True)
@click.option("--as-of", "as_of", type=DATE, help="As of the end of this window [default: now].")
def lineage_command(pattern: str, fmt: str, as_of: date | None) -> None:
    """The version graph of PATTERN (an id or a partition key): versions with status and usage,
    edges with evidence."""
    from feedback_loop_dagster.lib.lineage import mermaid

    pattern_id, graph = _graph(pattern, as_of)
    if fmt == "json":
        echo_json(graph.to_dict())
    elif fmt == "mermaid":
        click.echo(mermaid(graph))
    else:
        active = graph.get_active(pattern_id)
        click.echo(f"{pattern_id!r}: {len(graph.versions(pattern_id))} version(s), active "
                   f"{active.version if active else '-'}, as of {graph.as_of or 'now'} (usage in {graph.usage_window or '-'})")
        echo_table(graph.node_rows(), ["version", "status", "parent", "source", "usage_count", "success_rate", "usage_total", "why"])
        click.echo("")
        echo_table(graph.edge_rows(), ["from", "edge", "to", "window", "effect", "evidence"], empty="no edges")


# --- health ----------------------------------------------------------------------------------


@click.command("health")
@click.argument("pattern", required=False)
@click.option("--as-of", "as_of", type=DATE, help="As of the end of this window [default: today, UTC].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Also write the plot over time to this PNG file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def health_command(pattern: str | None, as_of: date | None, plot_path: str | None, as_json: bool) -> None:
    """Loop health (the design's Monitoring section) per pattern and over all patterns, or for
    PATTERN (an id or a partition key) and overall: improvement accuracy (promotions confirmed by
    their watch, target > 90%), false-positive rate (promotions rolled back, target < 5%), mean
    effect of promotions in each lead metric's unit, days between improvements, rejection rate,
    and A/B experiments inconclusive, running and pending review."""
    from feedback_loop_dagster.lib.report.health import (
        ACCURACY_TARGET,
        FALSE_POSITIVE_TARGET,
        health_as_of,
        health_over_time,
        health_report,
        health_row,
        load_history,
    )

    _ensure_warehouse()
    pattern_id = _pattern(pattern) if pattern is not None else None
    as_of = as_of or _today()
    with _warehouse().connect() as conn:
        history = load_history(conn)
    per_pattern, overall = health_report(history, as_of)
    if pattern_id is not None:
        per_pattern = [health_as_of(history, as_of, pattern_id)]
    if plot_path:
        from feedback_loop_dagster.defs.health.plot import health_figure
        from feedback_loop_dagster.defs.per_partition.plots import figure_png

        title = f"{pattern_id if pattern_id is not None else 'all patterns'}: loop health as of {as_of}"
        png = figure_png(health_figure(title, health_over_time(history, as_of, pattern_id)))
        try:
            with open(plot_path, "wb") as handle:
                handle.write(png)
        except OSError as exc:
            raise InvalidInput(f"cannot write --plot {plot_path!r}: {exc.strerror}") from None
    if as_json:
        echo_json({"as_of": as_of.isoformat(),
                   "targets": {"improvement_accuracy": ACCURACY_TARGET, "false_positive_rate": FALSE_POSITIVE_TARGET},
                   "overall": overall.to_dict(), "patterns": [h.to_dict() for h in per_pattern]})
        return
    click.echo(f"loop health as of {as_of} (targets: accuracy > {ACCURACY_TARGET:.0%}, "
               f"false positives < {FALSE_POSITIVE_TARGET:.0%})")
    echo_table([health_row(h) for h in [overall, *per_pattern]], empty="no patterns yet")
    if plot_path:
        click.echo(f"plot over time: {plot_path}")


def register(main: click.Group, patterns: click.Group) -> None:
    """Adds the loop's commands to the `feedback-loop` group (and `list` to `patterns`)."""
    for command in (run_command, backfill_command, policies, versions, experiments, approve_command, reject_command,
                    rollback_command, lineage_command, health_command):
        main.add_command(command)
    patterns.add_command(patterns_list)
