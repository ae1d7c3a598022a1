"""The pattern registry: immutable versions, compare-and-set labels, policies, assignment."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from feedback_loop_dagster.lib.experiment.assignment import assign_variant, in_treatment, unit_bucket
from feedback_loop_dagster.lib.registry.patch import diff_patch, merge_patch
from feedback_loop_dagster.lib.registry.policies import get_policy, set_policy
from feedback_loop_dagster.lib.registry.versions import (
    ACTIVE,
    IMPLICIT_VERSION,
    RegistryError,
    ensure_observed_versions,
    get_label,
    move_label,
    register_version,
)
from feedback_loop_dagster.lib.stats import get_preset
from feedback_loop_dagster_tests.loop.builders import PATTERN, pattern_with_candidate


@pytest.mark.both_dialects
def test_versions_are_immutable_and_registration_is_idempotent(engine):
    with engine.begin() as conn:
        v1 = register_version(conn, PATTERN, "v1", {"timeout_ms": 1000})
        assert register_version(conn, PATTERN, "v1", {"timeout_ms": 1000}) == v1
        with pytest.raises(RegistryError, match="immutable"):
            register_version(conn, PATTERN, "v1", {"timeout_ms": 5})
        with pytest.raises(RegistryError, match="non-empty"):
            register_version(conn, PATTERN, " v2", {})


def test_a_source_without_versions_gets_an_implicit_active_version(engine):
    with engine.begin() as conn:
        found = ensure_observed_versions(conn, "legacy", [IMPLICIT_VERSION, "v9"])
        assert get_label(conn, "legacy", ACTIVE) == found[IMPLICIT_VERSION]
        assert found[IMPLICIT_VERSION].source == "implicit" and found["v9"].source == "observed"


@pytest.mark.both_dialects
def test_label_moves_are_compare_and_set(engine):
    v1, v2, _ = pattern_with_candidate(engine)
    with engine.begin() as conn:
        assert move_label(conn, PATTERN, ACTIVE, v1.id, v2.id, None)
        assert not move_label(conn, PATTERN, ACTIVE, v1.id, v2.id, None)  # no longer v1
        assert get_label(conn, PATTERN, ACTIVE).id == v2.id


def test_policies_round_trip_and_default_to_a_preset(engine, monkeypatch):
    with engine.begin() as conn:
        assert get_policy(conn, "unknown").name == "production"
        monkeypatch.setenv("FEEDBACK_LOOP_DEFAULT_POLICY", "development")
        assert get_policy(conn, "unknown").name == "development"
        policy = get_preset("quality", min_sample_size=77)
        set_policy(conn, PATTERN, policy)
        assert get_policy(conn, PATTERN) == policy


def test_assign_variant_routes_by_the_registry_and_honours_the_split(engine):
    v1, v2, experiment = pattern_with_candidate(engine)
    units = [f"user-{i}" for i in range(4000)]
    arms = [assign_variant(PATTERN, u, engine) for u in units[:400]]
    assert set(arms) == {"v1", "v2"}
    assert arms == [assign_variant(PATTERN, u, engine) for u in units[:400]]  # stable per unit
    share = in_treatment(f"{PATTERN}\x00{experiment.id}", units, 0.3).mean()
    assert stats.binomtest(int(share * 4000), 4000, 0.3).pvalue > 0.001
    assert arms == ["v2" if unit_bucket(f"{PATTERN}\x00{experiment.id}", u) < 0.5 else "v1" for u in units[:400]]


def test_assign_variant_without_an_active_version_is_an_error(engine):
    with pytest.raises(LookupError, match="no active version"):
        assign_variant("nobody", "user-1", engine)


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1, "b": {"c": 2}}, {"b": {"c": None, "d": 3}}, {"a": 1, "b": {"d": 3}}),
        ({"a": [1]}, {"a": [2]}, {"a": [2]}),
        ({"a": 1}, {"a": None}, {}),
    ],
)
def test_json_merge_patch_follows_rfc_7386(target, patch, expected):
    assert merge_patch(target, patch) == expected
    assert merge_patch(target, diff_patch(target, expected)) == expected


def test_bucket_is_uniform():
    buckets = np.array([unit_bucket("salt", str(i)) for i in range(5000)])
    assert stats.kstest(buckets, "uniform").pvalue > 0.001
