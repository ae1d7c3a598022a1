"""`feedback_dataset` through Dagster: single partitions, range runs, the blocking validity check."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from feedback_loop_dagster.defs.collect.assets import FeedbackDatasetConfig, feedback_dataset, hook_executions
from feedback_loop_dagster.defs.partitions import partition_key, patterns_partitions
from feedback_loop_dagster.defs.resources import FeedbackDatabases
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.pattern_keys import register_pattern_ids
from feedback_loop_dagster_tests.factories import DAY, execution, insert_executions

PATTERNS = ["code-review", "agent|planner, v2"]


@pytest.fixture
def loaded(engine, migrated_url):
    rows = [
        execution(pattern_id=p, day=DAY + timedelta(days=d), minute=m, status="exploded" if m == 0 and d == 1 else "success")
        for p in PATTERNS
        for d in range(3)
        for m in range(10)
    ]
    insert_executions(engine, rows)
    keys = register_pattern_ids(engine, PATTERNS)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patterns_partitions.name, [keys[p] for p in PATTERNS])
        yield instance, keys, FeedbackDatabases(database_url=migrated_url)


def _materialize(instance, databases, **kwargs):
    return dg.materialize(
        [hook_executions, feedback_dataset],
        selection=[feedback_dataset],
        instance=instance,
        resources={"databases": databases},
        raise_on_error=False,
        **kwargs,
    )


def _partition_counts(engine):
    with engine.connect() as conn:
        return {
            (r.pattern_id, r.window_start): (r.valid_rows, r.quarantined_rows)
            for r in conn.execute(sa.select(tables.feedback_partitions))
        }


def _check_results(result):
    return [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]


def test_single_partition_materialises_with_metadata_and_passing_check(loaded, engine):
    instance, keys, databases = loaded
    result = _materialize(instance, databases, partition_key=str(partition_key(keys[PATTERNS[1]], DAY)))
    assert result.success
    (materialization,) = result.asset_materializations_for_node("feedback_dataset")
    assert materialization.metadata["valid_rows"].value == 10
    assert materialization.metadata["quarantined_rows"].value == 0
    assert {"preview", "invalid_by_reason", "partition_counts"} <= set(materialization.metadata)
    assert [c.passed for c in _check_results(result)] == [True]
    assert _partition_counts(engine) == {(PATTERNS[1], DAY): (10, 0)}


def test_range_run_tags_collect_every_partition_in_one_run(loaded, engine):
    instance, keys, databases = loaded
    first, last = keys[PATTERNS[0]], keys[PATTERNS[1]]
    result = _materialize(
        instance,
        databases,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: str(partition_key(first, DAY)),
            ASSET_PARTITION_RANGE_END_TAG: str(partition_key(last, DAY + timedelta(days=2))),
        },
    )
    # 10% invalid in the middle window exceeds the default 5% threshold: the blocking check fails.
    assert [c.passed for c in _check_results(result)] == [False]
    materializations = result.asset_materializations_for_node("feedback_dataset")
    assert len(materializations) == 6
    counts = _partition_counts(engine)
    assert len(counts) == 6
    assert counts[(PATTERNS[0], DAY + timedelta(days=1))] == (9, 1)
    assert all(valid + bad == 10 for valid, bad in counts.values())


def test_threshold_is_run_config(loaded):
    instance, keys, databases = loaded
    result = _materialize(
        instance,
        databases,
        partition_key=str(partition_key(keys[PATTERNS[0]], DAY + timedelta(days=1))),
        run_config={"ops": {"feedback_dataset": {"config": {"max_invalid_share": 0.2}}}},
    )
    assert [c.passed for c in _check_results(result)] == [True]


def test_context_partition_keys_of_a_range_are_all_collected(loaded, engine):
    instance, keys, databases = loaded
    context = dg.build_asset_context(
        partition_key_range=dg.PartitionKeyRange(
            str(partition_key(keys[PATTERNS[0]], DAY)), str(partition_key(keys[PATTERNS[0]], DAY + timedelta(days=2)))
        ),
        instance=instance,
    )
    result = feedback_dataset(context, config=FeedbackDatasetConfig(), databases=databases)
    assert result.metadata["partitions"] == 3
    assert set(_partition_counts(engine)) == {(PATTERNS[0], DAY + timedelta(days=d)) for d in range(3)}


def test_invalid_config_is_rejected_with_the_field_named(loaded):
    instance, keys, databases = loaded
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_invalid_share"):
        _materialize(
            instance,
            databases,
            partition_key=str(partition_key(keys[PATTERNS[0]], DAY)),
            run_config={"ops": {"feedback_dataset": {"config": {"max_invalid_share": "lots"}}}},
        )
