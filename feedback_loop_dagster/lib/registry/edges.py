"""Writing lineage edges between versions, refusing cycles in the ancestry.

`derived_from`, `merged_from` and `inspired_by` say where a version came from: they must form a
DAG. `promoted_over`, `rolled_back_to` and `replaced_by` record events between versions and may
revisit a version (a rollback returns to an older one), so they are not part of the cycle check.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.registry.versions import RegistryError, get_version
from feedback_loop_dagster.lib.storage import tables

ANCESTRY_EDGES = ("derived_from", "merged_from", "inspired_by")
EVENT_EDGES = ("promoted_over", "rolled_back_to", "replaced_by")
EDGE_TYPES = ANCESTRY_EDGES + EVENT_EDGES


def add_edge(
    conn: Connection,
    from_version_id: int,
    to_version_id: int,
    edge_type: str,
    evidence: dict[str, Any] | None = None,
    decision_id: int | None = None,
    window_start: date | None = None,
) -> int:
    """Records `from --edge_type--> to` (e.g. v2 derived_from v1); returns the edge id."""
    if edge_type not in EDGE_TYPES:
        raise RegistryError(f"edge type must be one of {', '.join(EDGE_TYPES)}, got {edge_type!r}")
    source, target = get_version(conn, from_version_id), get_version(conn, to_version_id)
    if source.pattern_id != target.pattern_id and edge_type not in ("inspired_by", "merged_from"):
        raise RegistryError(f"{edge_type} edges join versions of one pattern")
    if edge_type in ANCESTRY_EDGES and (
        from_version_id == to_version_id or from_version_id in ancestry_reachable(conn, to_version_id)
    ):
        raise RegistryError(
            f"edge {source.label} {edge_type} {target.label} would make a cycle in the version ancestry"
        )
    result = conn.execute(
        tables.lineage_edges.insert().values(
            pattern_id=source.pattern_id,
            from_version_id=from_version_id,
            to_version_id=to_version_id,
            edge_type=edge_type,
            decision_id=decision_id,
            evidence=evidence or {},
            window_start=window_start,
            created_at=datetime.now(UTC),
        )
    )
    return int(result.inserted_primary_key[0])


def ancestry_reachable(conn: Connection, version_id: int) -> set[int]:
    """Every version reachable from `version_id` along ancestry edges and parent links.

    Loads the ancestry links of one pattern at a time (an edge belongs to the pattern of its
    `from` version) and walks them in memory, so the check costs one query per pattern it
    reaches, not one per version or per level, on patterns with hundreds of versions.
    """
    edges = tables.lineage_edges
    versions = tables.pattern_versions
    parents: dict[int, set[int]] = {}
    known: set[int] = set()
    loaded: set[str] = set()

    def load(pattern_ids: set[str]) -> None:
        wanted = sorted(pattern_ids - loaded)
        if not wanted:
            return
        loaded.update(wanted)
        for child, parent in conn.execute(
            sa.select(versions.c.id, versions.c.parent_id).where(versions.c.pattern_id.in_(wanted))
        ):
            known.add(child)
            if parent is not None:
                parents.setdefault(child, set()).add(parent)
        for child, parent in conn.execute(
            sa.select(edges.c.from_version_id, edges.c.to_version_id).where(
                edges.c.pattern_id.in_(wanted), edges.c.edge_type.in_(ANCESTRY_EDGES)
            )
        ):
            parents.setdefault(child, set()).add(parent)

    reached: set[int] = set()
    frontier = {version_id}
    while frontier:
        unknown = frontier - known
        if unknown:
            load(set(conn.scalars(sa.select(versions.c.pattern_id).where(versions.c.id.in_(sorted(unknown))))))
            known.update(unknown)  # ids without a version row have no parents
        step = set().union(*(parents.get(v, set()) for v in frontier))
        frontier = step - reached
        reached |= step
    return reached
