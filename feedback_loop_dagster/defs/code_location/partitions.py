"""Every asset of the loop is partitioned by pattern x daily window (DESIGN.md section 1)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

import dagster as dg

from feedback_loop_dagster.lib import partition_start

PATTERN_DIMENSION = "pattern"
WINDOW_DIMENSION = "window"

patterns_partitions = dg.DynamicPartitionsDefinition(name="patterns")
# end_offset=1 includes today's still-open window, so the sensor can act on today's executions;
# the schedule targets the latest complete window.
window_partitions = dg.DailyPartitionsDefinition(start_date=partition_start.window_start_date(), end_offset=1)
pattern_window_partitions = dg.MultiPartitionsDefinition(
    {PATTERN_DIMENSION: patterns_partitions, WINDOW_DIMENSION: window_partitions}
)


def partition_key(pattern_key: str, window_start: date) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({PATTERN_DIMENSION: pattern_key, WINDOW_DIMENSION: window_start.isoformat()})


def pairs_from_keys(keys: Iterable[str]) -> list[tuple[str, date]]:
    """(pattern_key, window_start) for multi-partition key strings."""
    pairs = []
    for key in keys:
        parsed = pattern_window_partitions.get_partition_key_from_str(key)
        dims = parsed.keys_by_dimension
        pairs.append((dims[PATTERN_DIMENSION], date.fromisoformat(dims[WINDOW_DIMENSION])))
    return pairs


def run_partition_pairs(context: dg.AssetExecutionContext) -> Sequence[tuple[str, date]]:
    """The (pattern_key, window_start) pairs this run materialises: one key, or a whole range."""
    return pairs_from_keys(context.partition_keys)
