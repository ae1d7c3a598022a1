"""Materialising partitions in-process, as the CLI and the demo do, by set-based range runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from feedback_loop_dagster.defs.jobs import BATCH_TAG, PATTERN_TAG
from feedback_loop_dagster.defs.partitions import partition_key, patterns_partitions


def add_pattern_partitions(instance: dg.DagsterInstance, pattern_keys: Sequence[str]) -> list[str]:
    """Adds the keys the instance does not know yet; returns those."""
    known = set(instance.get_dynamic_partitions(patterns_partitions.name))
    new = [k for k in dict.fromkeys(pattern_keys) if k not in known]
    if new:
        instance.add_dynamic_partitions(patterns_partitions.name, new)
    return new


def contiguous_blocks(instance: dg.DagsterInstance, pattern_keys: Sequence[str]) -> list[list[str]]:
    """Splits keys into runs of neighbours in the instance's partition order, each a valid range."""
    order = instance.get_dynamic_partitions(patterns_partitions.name)
    position = {k: i for i, k in enumerate(order)}
    unknown = [k for k in pattern_keys if k not in position]
    if unknown:
        raise ValueError(f"unknown pattern partition key(s): {unknown[:5]}")
    blocks: list[list[str]] = []
    for key in sorted(set(pattern_keys), key=position.__getitem__):
        if blocks and position[key] == position[blocks[-1][-1]] + 1:
            blocks[-1].append(key)
        else:
            blocks.append([key])
    return blocks


def range_run_tags(pattern_keys: Sequence[str], first_window: date, last_window: date) -> dict[str, str]:
    """Tags of one run over the rectangle (pattern_keys[0]..pattern_keys[-1]) x (first..last window).

    The keys must be neighbours in the instance's partition order (a block of `contiguous_blocks`),
    since Dagster expands a multi-partition range dimension by dimension."""
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: str(partition_key(pattern_keys[0], first_window)),
        ASSET_PARTITION_RANGE_END_TAG: str(partition_key(pattern_keys[-1], last_window)),
    }
    if len(pattern_keys) == 1:
        tags[PATTERN_TAG] = pattern_keys[0]
    else:
        tags[BATCH_TAG] = f"{pattern_keys[0]}..{pattern_keys[-1]}"
    return tags


def materialize_windows(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    pattern_keys: Sequence[str],
    first_window: date,
    last_window: date,
    job_name: str = "feedback_loop_job",
    run_config: dict | None = None,
    asset_selection: Sequence[dg.AssetKey] | None = None,
    raise_on_error: bool = True,
) -> list[dg.ExecuteInProcessResult]:
    """One range run per contiguous block of patterns over [first_window, last_window].

    `run_config` is passed to every run (e.g. the demo's quieter console logger);
    `asset_selection` runs only those assets of the job (e.g. only `feedback_dataset`);
    `raise_on_error=False` goes on to the next block after a failed run (its result says so)."""
    job = defs.resolve_job_def(job_name)
    results = []
    for block in contiguous_blocks(instance, pattern_keys):
        results.append(
            job.execute_in_process(
                run_config=run_config,
                instance=instance,
                tags=range_run_tags(block, first_window, last_window),
                raise_on_error=raise_on_error,
                asset_selection=asset_selection,
            )
        )
    return results
