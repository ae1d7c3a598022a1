"""Immutable pattern versions and the labels that point at them (Langfuse / MLflow alias style).

Every function takes an open connection, so callers compose them into one transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.errors import UserError
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.upserts import upsert

IMPLICIT_VERSION = "(unversioned)"
ACTIVE = "active"
CANDIDATE = "candidate"
VERSION_SOURCES = ("implicit", "observed", "proposal", "manual")
# A version name: non-empty, no surrounding blanks, no control characters. One rule for the
# registry and for the collector, which quarantines executions whose pattern_version breaks it.
_NAME_CHAR = r"[^\x00-\x1f\x7f-\x9f]"
_EDGE_CHAR = r"[^\s\x00-\x1f\x7f-\x9f]"
VERSION_NAME_PATTERN = rf"{_EDGE_CHAR}(?:{_NAME_CHAR}*{_EDGE_CHAR})?\Z"


def valid_version_name(name: str) -> bool:
    return re.match(VERSION_NAME_PATTERN, name) is not None


class RegistryError(UserError, ValueError):
    """A registry change that would break an invariant (immutability, a cycle, a stale label)."""


@dataclass(frozen=True)
class Version:
    id: int
    pattern_id: str
    version: str
    parent_id: int | None
    config: dict[str, Any]
    created_at: datetime
    created_by: str
    source: str
    proposal_id: int | None

    @property
    def label(self) -> str:
        return f"{self.pattern_id}@{self.version}"

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Version:
        return cls(
            id=row["id"],
            pattern_id=row["pattern_id"],
            version=row["version"],
            parent_id=row["parent_id"],
            config=row["config"],
            created_at=row["created_at"],
            created_by=row["created_by"],
            source=row["source"],
            proposal_id=row["proposal_id"],
        )


def register_version(
    conn: Connection,
    pattern_id: str,
    version: str,
    config: Mapping[str, Any] | None = None,
    parent_id: int | None = None,
    created_by: str = "feedback-loop",
    source: str = "manual",
    proposal_id: int | None = None,
) -> Version:
    """Create a version, or return the identical existing one; a different config is refused."""
    if source not in VERSION_SOURCES:
        raise RegistryError(f"version source must be one of {VERSION_SOURCES}, got {source!r}")
    if not valid_version_name(version):
        raise RegistryError(
            f"version name must be non-empty, without surrounding spaces or control characters, got {version!r}"
        )
    config = dict(config or {})
    # Configs compare as the stored text (1, 1.0 and true differ; a tuple is a list).
    stored_text = tables.pattern_versions.c.config.type.dumps
    config_text = stored_text(config)
    existing = find_version(conn, pattern_id, version)
    if existing is not None:
        if stored_text(existing.config) != config_text or existing.parent_id != parent_id:
            raise RegistryError(
                f"version {existing.label} already exists with another config or parent; versions are "
                "immutable: register a new version name"
            )
        return existing
    if parent_id is not None and get_version(conn, parent_id).pattern_id != pattern_id:
        raise RegistryError(f"parent version {parent_id} belongs to another pattern")
    conn.execute(
        tables.pattern_versions.insert().values(
            pattern_id=pattern_id,
            version=version,
            parent_id=parent_id,
            config=config,
            created_at=datetime.now(UTC),
            created_by=created_by,
            source=source,
            proposal_id=proposal_id,
        )
    )
    return find_version(conn, pattern_id, version)


def find_version(conn: Connection, pattern_id: str, version: str) -> Version | None:
    row = (
        conn.execute(
            sa.select(tables.pattern_versions).where(
                tables.pattern_versions.c.pattern_id == pattern_id, tables.pattern_versions.c.version == version
            )
        )
        .mappings()
        .first()
    )
    return Version.from_row(row) if row else None


def get_version(conn: Connection, version_id: int) -> Version:
    row = conn.execute(sa.select(tables.pattern_versions).where(tables.pattern_versions.c.id == version_id)).mappings().first()
    if row is None:
        raise RegistryError(f"no pattern version with id {version_id}")
    return Version.from_row(row)


def list_versions(conn: Connection, pattern_id: str) -> list[Version]:
    rows = conn.execute(
        sa.select(tables.pattern_versions)
        .where(tables.pattern_versions.c.pattern_id == pattern_id)
        .order_by(tables.pattern_versions.c.id)
    ).mappings()
    return [Version.from_row(r) for r in rows]


def ensure_observed_versions(conn: Connection, pattern_id: str, names: Iterable[str]) -> dict[str, Version]:
    """Registers the versions executions ran that the registry does not know yet.

    The first version a pattern is seen with becomes `active`, so a source that never recorded
    versions works with its implicit first version.
    """
    found = {}
    for name in sorted(set(names), key=lambda n: (n != IMPLICIT_VERSION, n)):
        source = "implicit" if name == IMPLICIT_VERSION else "observed"
        found[name] = find_version(conn, pattern_id, name) or register_version(
            conn, pattern_id, name, {}, created_by="feedback-loop", source=source
        )
    if found and get_label(conn, pattern_id, ACTIVE) is None:
        first = min(found.values(), key=lambda v: v.id)
        set_label(conn, pattern_id, ACTIVE, first.id, evidence_window=None)
    return found


def get_label(conn: Connection, pattern_id: str, label: str) -> Version | None:
    row = conn.execute(
        sa.select(tables.pattern_versions)
        .join(tables.pattern_labels, tables.pattern_labels.c.version_id == tables.pattern_versions.c.id)
        .where(tables.pattern_labels.c.pattern_id == pattern_id, tables.pattern_labels.c.label == label)
    ).mappings().first()
    return Version.from_row(row) if row else None


def label_evidence_window(conn: Connection, pattern_id: str, label: str) -> date | None:
    return conn.scalar(
        sa.select(tables.pattern_labels.c.evidence_window).where(
            tables.pattern_labels.c.pattern_id == pattern_id, tables.pattern_labels.c.label == label
        )
    )


def set_label(conn: Connection, pattern_id: str, label: str, version_id: int, evidence_window: date | None) -> None:
    if get_version(conn, version_id).pattern_id != pattern_id:
        raise RegistryError(f"version {version_id} does not belong to pattern {pattern_id!r}")
    upsert(
        conn,
        tables.pattern_labels,
        [
            {
                "pattern_id": pattern_id,
                "label": label,
                "version_id": version_id,
                "evidence_window": evidence_window,
                "updated_at": datetime.now(UTC),
            }
        ],
        ["pattern_id", "label"],
    )


def move_label(
    conn: Connection,
    pattern_id: str,
    label: str,
    expected_version_id: int,
    to_version_id: int,
    evidence_window: date | None,
) -> bool:
    """Compare-and-set: moves the label only if it still points at `expected_version_id`.

    On PostgreSQL the UPDATE takes the label's row lock, so of two concurrent transactions the
    second re-reads the moved label after the first commits and updates nothing.
    """
    if get_version(conn, to_version_id).pattern_id != pattern_id:
        raise RegistryError(f"version {to_version_id} does not belong to pattern {pattern_id!r}")
    labels = tables.pattern_labels
    result = conn.execute(
        labels.update()
        .where(labels.c.pattern_id == pattern_id, labels.c.label == label, labels.c.version_id == expected_version_id)
        .values(version_id=to_version_id, evidence_window=evidence_window, updated_at=datetime.now(UTC))
    )
    return result.rowcount == 1


def delete_label(conn: Connection, pattern_id: str, label: str) -> None:
    conn.execute(
        tables.pattern_labels.delete().where(
            tables.pattern_labels.c.pattern_id == pattern_id, tables.pattern_labels.c.label == label
        )
    )
