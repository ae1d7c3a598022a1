"""Asset checks with one result per partition, in range runs too."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from feedback_loop_dagster.defs.code_location.partitions import pattern_window_partitions


@dataclass(frozen=True)
class PartitionCheck:
    """One partition's result of a check."""

    partition_key: str
    passed: bool
    description: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


def partition_check_spec(name: str, asset: str, description: str) -> dg.AssetCheckSpec:
    """A check partitioned like the loop's assets, so each partition has its own result and the UI
    shows which partitions failed. The checks never block Dagster's downstream steps: those run
    for the whole range, and skip only the partitions an earlier stage failed (defs/per_partition/loop.py)."""
    # Dagster 1.13 calls a partitioned check spec a preview feature. It is the only way a range
    # run records a result per partition; the warning concerns this definition, not anything a
    # user of the code location can act on, so it is silenced here, for this call only.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, description=description, partitions_def=pattern_window_partitions, blocking=False
        )


def partition_check_events(
    context: dg.AssetExecutionContext, check_name: str, results: Iterable[PartitionCheck]
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """The events of a partitioned check for the partitions in `results` (a partition without a
    result shows as not evaluated), when the run selected the check.

    `AssetCheckResult` cannot name a partition of a range run, so the evaluations are built here,
    followed by the check's (empty) output, which AssetCheckResult would otherwise produce."""
    key = dg.AssetCheckKey(context.assets_def.key, check_name)
    if key not in context.selected_asset_check_keys:
        return
    for result in results:
        yield dg.AssetCheckEvaluation(
            asset_key=key.asset_key,
            check_name=check_name,
            passed=result.passed,
            partition=result.partition_key,
            severity=dg.AssetCheckSeverity.ERROR,
            blocking=False,
            description=result.description,
            metadata=dict(result.metadata),
        )
    yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))
