"""`feedback_dataset` through Dagster: single partitions, range runs, the validity check per partition."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from feedback_loop_dagster.defs.code_location.partitions import partition_key, patterns_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.collect.assets import feedback_dataset, hook_executions
from feedback_loop_dagster.lib.registry.policies import set_policy
from feedback_loop_dagster.lib.stats import get_preset
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
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
    metadata = materialization.metadata
    assert metadata["valid_rows"].value == 10 == metadata["dagster/row_count"].value
    assert metadata["quarantined_rows"].value == 0 and "invalid_by_reason" not in metadata
    assert metadata["pattern_id"].value == PATTERNS[1] and metadata["status"].value == "ok"
    assert len(metadata["preview"].value.records) == 5
    assert [(c.partition, c.passed) for c in _check_results(result)] == [(materialization.partition, True)]
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
    # 10% invalid in each pattern's middle window exceeds the default 5% threshold: those
    # partitions alone fail their check, with why; the run goes on.
    assert result.success
    bad = {str(partition_key(keys[p], DAY + timedelta(days=1))) for p in PATTERNS}
    checks = {c.partition: c for c in _check_results(result)}
    assert len(checks) == 6 and {p for p, c in checks.items() if not c.passed} == bad
    assert all(
        checks[p].description.startswith("10.0% of rows invalid (1 of 10), above max_invalid_share 5.0%") for p in bad
    )
    materializations = {m.partition: m.metadata for m in result.asset_materializations_for_node("feedback_dataset")}
    assert len(materializations) == 6
    # Each partition shows its own figures, not the run's.
    assert {p: m["dagster/row_count"].value for p, m in materializations.items()} == {
        p: 9 if p in bad else 10 for p in materializations}
    assert {p for p, m in materializations.items() if m["status"].value == "failed"} == bad
    for p in bad:
        assert materializations[p]["invalid_by_reason"].value.records[0].data["rows"] == 1
        (quarantined,) = materializations[p]["quarantine_preview"].value.records
        assert quarantined.data["reason"].startswith("status")
    assert {p: m["pattern_id"].value for p, m in materializations.items()} == {
        str(partition_key(keys[p], DAY + timedelta(days=d))): p for p in PATTERNS for d in range(3)}
    counts = _partition_counts(engine)
    assert len(counts) == 6
    assert counts[(PATTERNS[0], DAY + timedelta(days=1))] == (9, 1)
    assert all(valid + bad == 10 for valid, bad in counts.values())


def test_threshold_is_the_patterns_policy_and_run_config_overrides_it(loaded, engine):
    instance, keys, databases = loaded
    bad = str(partition_key(keys[PATTERNS[0]], DAY + timedelta(days=1)))
    with engine.begin() as conn:
        set_policy(conn, PATTERNS[0], get_preset("production", max_invalid_share=0.2))
    assert [c.passed for c in _check_results(_materialize(instance, databases, partition_key=bad))] == [True]
    stricter = {"ops": {"feedback_dataset": {"config": {"max_invalid_share": 0.05}}}}
    result = _materialize(instance, databases, partition_key=bad, run_config=stricter)
    assert [c.passed for c in _check_results(result)] == [False]
    (materialization,) = result.asset_materializations_for_node("feedback_dataset")
    assert materialization.metadata["max_invalid_share"].value == 0.05


def test_policy_refuses_an_invalid_share_out_of_range():
    with pytest.raises(ValueError, match="max_invalid_share"):
        get_preset("production", max_invalid_share=1.5)


def test_invalid_config_is_rejected_with_the_field_named(loaded):
    instance, keys, databases = loaded
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_invalid_share"):
        _materialize(
            instance,
            databases,
            partition_key=str(partition_key(keys[PATTERNS[0]], DAY)),
            run_config={"ops": {"feedback_dataset": {"config": {"max_invalid_share": "lots"}}}},
        )
