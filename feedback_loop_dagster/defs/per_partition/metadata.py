"""Materialisation metadata the UI renders: each partition's own figures, tables from DataFrames."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
import pandas as pd
from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator

from feedback_loop_dagster.defs.per_partition.loop import Outcome


def _cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return round(value, 6)
    return str(value)


def table_metadata(frame: pd.DataFrame, limit: int = 50) -> dg.TableMetadataValue:
    """The first `limit` rows as a table (built from one object array: a range run makes thousands)."""
    frame = frame.iloc[:limit]
    columns = [str(c) for c in frame.columns]
    rows = frame.to_numpy(dtype=object).tolist() if len(frame) else []
    records = [dg.TableRecord(dict(zip(columns, map(_cell, row), strict=True))) for row in rows]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, str(t)) for c, t in zip(columns, frame.dtypes, strict=True)])
    return dg.MetadataValue.table(records, schema=schema)


def report_partitions(
    context: dg.AssetExecutionContext, outcomes: list[Outcome], figures: Callable[[Outcome], Mapping[str, Any]]
) -> None:
    """Gives each partition's materialisation its own metadata: `pattern_id` (the original id),
    `status` (ok, failed, skipped) and, unless ok, the `reason`; then `figures(outcome)`, the
    partition's own figures, for the outcomes that carry a value (the ok ones, and a collected
    partition that failed its validity check; a skipped partition has none)."""
    metadata = {}
    for outcome in outcomes:
        entries: dict[str, Any] = {"pattern_id": outcome.partition.pattern_id, "status": outcome.status}
        if outcome.reason:
            entries["reason"] = outcome.reason
        if outcome.value is not None:
            entries.update(figures(outcome))
        metadata[outcome.partition.dagster_key] = entries
    add_partition_metadata(context, metadata)


def add_partition_metadata(context: dg.AssetExecutionContext, metadata: Mapping[str, Mapping[str, Any]]) -> None:
    """What `context.add_asset_metadata(entries, partition_key=key)` does for every key, at once.

    Dagster merges these entries into each partition's own materialisation event, even in a range
    run. Its public method re-expands the run's whole partition range on every call to check that
    the key belongs to it, so a run over N partitions pays O(N^2) (measured: 1.3 s for 350
    partitions, 43 s for 2,100, per asset); the keys here come from the run itself, so that check
    is done once and the entries go into the same accumulator directly (dagster pinned in
    pyproject.toml; loop/test_partition_failures.py fails if that accumulator changes).
    """
    unknown = set(metadata) - set(context.partition_keys)
    if unknown:
        raise ValueError(f"metadata for partitions outside the run: {sorted(unknown)[:3]}")
    step = context.get_step_execution_context()
    accumulated: OutputMetadataAccumulator = step._metadata_accumulator  # noqa: SLF001 - see docstring
    asset_key = context.assets_def.key
    added = {
        AssetMetadataHandle(asset_key=asset_key, partition_key=key): {
            **accumulated.get_asset_metadata(asset_key, key),
            **entries,
        }
        for key, entries in metadata.items()
    }
    step._metadata_accumulator = OutputMetadataAccumulator(  # noqa: SLF001
        per_output_metadata={**accumulated.per_output_metadata, **added}
    )
