"""The traversal API over a warehouse: each call loads the patterns it needs once, then walks
the graph in memory (see graph.LineageGraph for what a version reference may be)."""

from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from feedback_loop_dagster.lib.errors import NotFound
from feedback_loop_dagster.lib.lineage.graph import ConfigDiff, LineageGraph, LineageNode
from feedback_loop_dagster.lib.lineage.load import lineage_graph
from feedback_loop_dagster.lib.storage import tables


class Lineage:
    """`get_ancestors`, `get_descendants`, `get_lineage_path`, `get_active`, `diff` on the
    registry as it is now (or as of a window with `graph(pattern, as_of)`).

        lineage = Lineage(engine)
        lineage.get_lineage_path("code-review@v3")   # [v1, v2, v3]
        lineage.get_active("code-review").version
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def graph(self, pattern_id: str, as_of: date | None = None) -> LineageGraph:
        with self.engine.connect() as conn:
            return lineage_graph(conn, pattern_id, as_of)

    def pattern_of(self, ref: Any) -> str:
        """The pattern a version reference belongs to (LookupError when there is none)."""
        if isinstance(ref, tuple) and len(ref) == 2:
            return ref[0]
        if isinstance(getattr(ref, "pattern_id", None), str):
            return ref.pattern_id
        v = tables.pattern_versions
        with self.engine.connect() as conn:
            if isinstance(ref, int) and not isinstance(ref, bool):
                found = conn.scalar(sa.select(v.c.pattern_id).where(v.c.id == ref))
                if found is None:
                    raise NotFound(f"no pattern version with id {ref}")
                return found
            if isinstance(ref, str):
                splits = [(ref[:i], ref[i + 1 :]) for i, ch in enumerate(ref) if ch == "@"]
                if splits:
                    found = conn.execute(
                        sa.select(v.c.pattern_id).where(sa.tuple_(v.c.pattern_id, v.c.version).in_(splits)).limit(1)
                    ).scalar()
                    if found is not None:
                        return found
                patterns = sorted(set(conn.scalars(sa.select(v.c.pattern_id).where(v.c.version == ref))))
                if len(patterns) == 1:
                    return patterns[0]
                if len(patterns) > 1:
                    raise NotFound(f"version name {ref!r} is ambiguous: write it as pattern@{ref}")
                raise NotFound(f"no pattern version {ref!r}: write it as pattern@version")
        raise NotFound(f"not a version reference: {ref!r}")

    def _graph_for(self, *refs: Any) -> LineageGraph:
        patterns = sorted({self.pattern_of(r) for r in refs})
        with self.engine.connect() as conn:
            return lineage_graph(conn, patterns)

    def get_ancestors(self, version: Any) -> list[LineageNode]:
        return self._graph_for(version).get_ancestors(version)

    def get_descendants(self, version: Any) -> list[LineageNode]:
        return self._graph_for(version).get_descendants(version)

    def get_lineage_path(self, version: Any) -> list[LineageNode]:
        return self._graph_for(version).get_lineage_path(version)

    def get_active(self, pattern_id: str) -> LineageNode | None:
        return self.graph(pattern_id).get_active(pattern_id)

    def diff(self, version_a: Any, version_b: Any) -> ConfigDiff:
        return self._graph_for(version_a, version_b).diff(version_a, version_b)
