"""What a person does to the registry by hand (the `feedback-loop versions` commands): register a
version, make it active.

Each change that moves the `active` label is recorded as a lineage edge with who did it, so the
lineage graph explains manual changes as well as the loop's own.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.clock import utc_today
from feedback_loop_dagster.lib.errors import InvalidInput, NotFound
from feedback_loop_dagster.lib.experiment.experiments import running_experiment
from feedback_loop_dagster.lib.registry.edges import add_edge
from feedback_loop_dagster.lib.registry.patch import merge_patch
from feedback_loop_dagster.lib.registry.versions import (
    ACTIVE,
    CANDIDATE,
    RegistryError,
    Version,
    find_version,
    get_label,
    move_label,
    register_version,
    set_label,
)

# Names a person gives a version: short, printable, no blanks or quotes, so they read the same in
# a table, a shell, a partition's metadata and a Mermaid diagram. Stricter than the registry's
# rule for every name (versions.register_version), which observed names from the source follow.
MANUAL_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


def check_version_name(name: str) -> str:
    """`name` if a person may give it to a version, else a RegistryError saying why."""
    if not isinstance(name, str) or not MANUAL_VERSION_NAME.fullmatch(name):
        raise RegistryError(
            f"version name {name!r} is not allowed: use 1-64 letters, digits and . _ + -, starting with a letter or digit"
        )
    if name in (ACTIVE, CANDIDATE):
        raise RegistryError(f"version name {name!r} is reserved: it names a label (`versions show P {name}`)")
    return name


def resolve_version(conn: Connection, pattern_id: str, name: str) -> Version:
    """A version by name; `active` and `candidate` name the versions those labels point at."""
    version = find_version(conn, pattern_id, name)
    if version is None and name in (ACTIVE, "candidate"):
        version = get_label(conn, pattern_id, name)
    if version is None:
        raise NotFound(f"pattern {pattern_id!r} has no version {name!r}")
    return version


def register_manual_version(
    conn: Connection,
    pattern_id: str,
    name: str,
    config: dict[str, Any] | None = None,
    patch: dict[str, Any] | None = None,
    parent: str | None = None,
    user: str = "feedback-loop",
    window: date | None = None,
) -> Version:
    """Register `name` (a name a person may give, `check_version_name`) derived from `parent`
    (default: the active version, if any).

    `config` is the whole config; `patch` a JSON merge patch on the parent's config (one of them,
    or neither to copy the parent's config). The new version gets a `derived_from` edge.
    """
    check_version_name(name)
    if config is not None and patch is not None:
        raise InvalidInput("give the config or a patch, not both")
    if config is not None and not isinstance(config, dict):
        raise InvalidInput("config must be a JSON object")
    if patch is not None and not isinstance(patch, dict):
        raise InvalidInput("patch must be a JSON object")
    base = resolve_version(conn, pattern_id, parent) if parent else get_label(conn, pattern_id, ACTIVE)
    if patch is not None and base is None:
        raise InvalidInput(f"pattern {pattern_id!r} has no active version to patch: pass --parent or a whole config")
    if config is None:
        config = merge_patch(base.config, patch) if patch is not None else dict(base.config if base else {})
    existing = find_version(conn, pattern_id, name)
    version = register_version(
        conn, pattern_id, name, config, parent_id=base.id if base else None, created_by=f"user:{user}", source="manual"
    )
    if base is not None and existing is None:
        add_edge(conn, version.id, base.id, "derived_from", {"user": user}, window_start=window or utc_today())
    return version


def activate_version(conn: Connection, pattern_id: str, name: str, user: str, reason: str = "", window: date | None = None) -> Version:
    """Make a version active by hand, recorded as `previous replaced_by new`.

    Refused while an experiment runs for the pattern: its verdict would move the label from a
    version that is no longer active (stop it first with `feedback-loop experiments stop`).
    """
    version = resolve_version(conn, pattern_id, name)
    running = running_experiment(conn, pattern_id)
    if running is not None:
        raise RegistryError(
            f"pattern {pattern_id!r} has a running experiment (#{running.id}, {running.kind}); stop it first"
        )
    current = get_label(conn, pattern_id, ACTIVE)
    when = window or utc_today()
    if current is None:
        set_label(conn, pattern_id, ACTIVE, version.id, when)
        return version
    if current.id == version.id:
        raise RegistryError(f"{version.label} is already active")
    if not move_label(conn, pattern_id, ACTIVE, current.id, version.id, when):
        raise RegistryError(f"the active version of {pattern_id!r} changed meanwhile; try again")
    add_edge(conn, current.id, version.id, "replaced_by", {"user": user, "reason": reason}, window_start=when)
    return version
