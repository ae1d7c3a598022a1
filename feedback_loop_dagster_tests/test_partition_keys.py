"""Pattern ids that Dagster cannot use as partition keys get stable, safe keys."""

from __future__ import annotations

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedback_loop_dagster.defs.code_location.partitions import pairs_from_keys, partition_key, patterns_partitions
from feedback_loop_dagster.lib.safe_partition_key import is_safe_partition_key, safe_partition_key
from feedback_loop_dagster.lib.storage.partition_key_map import pattern_ids_for_keys, register_pattern_ids
from feedback_loop_dagster_tests.factories import DAY

NASTY_IDS = [
    "agent|planner",
    "a,b",
    "[draft]",
    "x]",
    "wait...what",
    "line\nbreak",
    "tab\there",
    "p" * 101,
    " leading",
    "trailing ",
    "résumé",
    "日本語",
    "emoji 🚀",
    "|",
    "...",
]


@pytest.mark.parametrize("pattern_id", NASTY_IDS)
def test_nasty_ids_get_keys_dagster_accepts_and_splits_back(pattern_id):
    key = safe_partition_key(pattern_id)
    assert key != pattern_id and is_safe_partition_key(key)
    assert key == safe_partition_key(pattern_id)  # stable
    assert pairs_from_keys([str(partition_key(key, DAY))]) == [(key, DAY)]


def test_a_dagster_instance_accepts_every_safe_key():
    keys = [safe_partition_key(i) for i in NASTY_IDS]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patterns_partitions.name, keys)
        assert instance.get_dynamic_partitions(patterns_partitions.name) == keys


@pytest.mark.parametrize("pattern_id", ["code-review", "sql_generator.v2", "team:search@eu", "A1"])
def test_safe_ids_are_their_own_key(pattern_id):
    assert safe_partition_key(pattern_id) == pattern_id


@given(st.text(min_size=1, max_size=300))
def test_every_id_maps_to_a_safe_key(pattern_id):
    key = safe_partition_key(pattern_id)
    assert is_safe_partition_key(key) and len(key) <= 100


def test_distinct_ids_with_the_same_slug_get_distinct_keys():
    assert safe_partition_key("a|b") != safe_partition_key("a,b")


def test_empty_id_is_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        safe_partition_key("")


@pytest.mark.both_dialects
def test_mapping_is_stored_and_read_back(engine):
    keys = register_pattern_ids(engine, NASTY_IDS + ["code-review"])
    assert register_pattern_ids(engine, NASTY_IDS) == {i: keys[i] for i in NASTY_IDS}  # idempotent
    assert pattern_ids_for_keys(engine, keys.values()) == {k: i for i, k in keys.items()}
