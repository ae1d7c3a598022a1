"""`versions list|show|register|diff` and `lineage`: a pattern's versions and their graph."""

from __future__ import annotations

import json
from datetime import date

import click

from feedback_loop_dagster.cli.common import (
    DATE,
    echo_json,
    echo_table,
    pattern_named,
    register_pattern,
    user_name,
    warehouse_engine,
)
from feedback_loop_dagster.lib.errors import InvalidInput, NotFound


@click.group("versions")
def versions() -> None:
    """Pattern versions: list, show, register, diff."""


def version_graph(pattern: str, as_of: date | None = None):
    """(pattern id, its version graph as of `as_of`) for the pattern PATTERN names."""
    from feedback_loop_dagster.lib.lineage import lineage_graph

    pattern_id = pattern_named(pattern)
    with warehouse_engine().connect() as conn:
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
    pattern_id, graph = version_graph(pattern)
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
    pattern_id, graph = version_graph(pattern)
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
    for line in json.dumps(node.config, indent=2, sort_keys=True).splitlines():  # display, not storage
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
        value = json.loads(text)  # the user's --config or --patch, not a stored document
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
    pattern_id = pattern_named(pattern, create=create)
    who = user_name(user)
    with warehouse_engine().begin() as conn:
        registered = register_manual_version(
            conn, pattern_id, version, config=config, patch=patch, parent=parent, user=who,
        )
        if activate:
            activate_version(conn, pattern_id, version, user=who, reason=reason)
    register_pattern(pattern_id)
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
    pattern_id, graph = version_graph(pattern)
    diff = graph.diff(_node(graph, pattern_id, version_a), _node(graph, pattern_id, version_b))
    if as_json:
        echo_json(diff.to_dict())
        return
    if not diff.changes:
        click.echo(f"{version_a} and {version_b} have the same config")
        return
    echo_table(diff.changes, ["path", "before", "after"])
    click.echo(f"merge patch: {json.dumps(diff.patch, sort_keys=True)}")  # display, not storage


@click.command("lineage")
@click.argument("pattern")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "mermaid"]), default="table", show_default=True)
@click.option("--as-of", "as_of", type=DATE, help="As of the end of this window [default: now].")
def lineage_command(pattern: str, fmt: str, as_of: date | None) -> None:
    """The version graph of PATTERN (an id or a partition key): versions with status and usage,
    edges with evidence."""
    from feedback_loop_dagster.lib.lineage import mermaid

    pattern_id, graph = version_graph(pattern, as_of)
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
