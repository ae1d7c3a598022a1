"""The execution simulator: deterministic, realistic rows, an honest malformed share, and writes.

Database tests take the `source_engine` fixture below (SQLite for now); to run them on every
backend, replace it with the shared `engine` fixture from conftest.py.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback_loop_dagster.lib.safe_partition_key import is_safe_partition_key
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import dispose_engine, get_engine
from feedback_loop_dagster.simulator import (
    COLUMNS,
    ERROR_CLASSES,
    EXECUTION_STATUSES,
    MALFORMED_KINDS,
    NASTY_PATTERN_IDS,
    SimulationConfig,
    SimulationConflict,
    iter_simulated_chunks,
    pattern_ids,
    pattern_profiles,
    simulate_rows,
    simulate_to_database,
    write_executions,
)
from feedback_loop_dagster.simulator.executions import DUPLICATE_KIND

END = date(2025, 3, 1)
SMALL = SimulationConfig(patterns=6, days=14, per_day=200, seed=3, end_date=END)


@pytest.fixture(scope="module")
def small():
    return simulate_rows(SMALL)


@pytest.fixture
def source_engine(tmp_path):
    """A fresh SQLite source; swap for conftest's `engine` to cover PostgreSQL too."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    yield get_engine(url)
    dispose_engine(url)


def violations(frame: pd.DataFrame) -> pd.DataFrame:
    """One boolean column per malformed kind: which rows break that rule (a reference check)."""
    status_known = frame["status"].isin(EXECUTION_STATUSES)
    finished = status_known & (frame["status"] != "in_progress")

    def bad_json(text):
        if text is None:
            return False
        try:
            return not isinstance(json.loads(text).get("score"), float)
        except (ValueError, AttributeError):
            return True

    repeated = frame.assign(day=frame["started_at"].dt.date).duplicated(["pattern_id", "day", "execution_id"])
    return pd.DataFrame(
        {
            "unknown_status": ~status_known,
            "negative_duration": frame["duration_ms"] < 0,
            "quality_out_of_range": frame["quality_score"].notna() & ~frame["quality_score"].between(0, 1),
            "rating_out_of_range": frame["user_rating"].notna() & ~frame["user_rating"].between(0, 1),
            "negative_retry_count": frame["retry_count"] < 0,
            "completed_before_started": frame["completed_at"] < frame["started_at"],
            "malformed_quality_json": frame["quality_results"].map(bad_json).astype(bool),
            "finished_without_duration": finished & (frame["duration_ms"].isna() | frame["completed_at"].isna()),
            "duplicate_execution_id": repeated,
        }
    )[list(MALFORMED_KINDS)]


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_gives_identical_rows_and_kinds(small):
    again = simulate_rows(SMALL)
    pd.testing.assert_frame_equal(small.frame, again.frame)
    pd.testing.assert_series_equal(small.malformed_kind, again.malformed_kind)


def test_different_seed_gives_different_rows(small):
    other = simulate_rows(SMALL, seed=4)
    assert set(small.frame["execution_id"]).isdisjoint(other.frame["execution_id"])
    assert not np.allclose(small.frame["duration_ms"].fillna(0), other.frame["duration_ms"].fillna(0))


def test_chunk_size_does_not_change_the_rows(small):
    chunks = list(iter_simulated_chunks(replace(SMALL, chunk_rows=1000)))
    assert len(chunks) > 5
    assert all(len(c.frame) < 2 * 1000 + SMALL.patterns * SMALL.per_day for c in chunks)
    # The index runs on across chunks, so kinds stay aligned with their rows.
    assert [c.frame.index[0] for c in chunks] == list(np.cumsum([0] + [len(c.frame) for c in chunks[:-1]]))
    pd.testing.assert_frame_equal(pd.concat(c.frame for c in chunks), small.frame)
    pd.testing.assert_series_equal(pd.concat(c.malformed_kind for c in chunks), small.malformed_kind)


def test_execution_ids_are_uuids_derived_from_the_seed(small):
    for text in small.frame["execution_id"].head(50):
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and str(parsed) == text


# --- shape and counts -----------------------------------------------------------------------


def test_columns_are_the_source_contract_without_seq(small):
    assert list(small.frame.columns) == list(COLUMNS)
    assert list(COLUMNS) == [c.name for c in tables.hook_executions.columns if c.name != "seq"]
    assert "malformed_kind" not in small.frame.columns
    assert small.malformed_kind.index.equals(small.frame.index)


def test_every_pattern_has_per_day_rows_on_each_of_the_days_before_end(small):
    frame = small.frame
    assert len(frame) == SMALL.total_rows == 6 * 14 * 200
    assert frame.index.equals(pd.RangeIndex(len(frame)))
    counts = frame.groupby(["pattern_id", frame["started_at"].dt.date]).size()
    assert (counts == SMALL.per_day).all()
    assert len(counts) == SMALL.patterns * SMALL.days
    days = sorted(set(frame["started_at"].dt.date))
    assert days == [END - timedelta(days=d) for d in range(SMALL.days, 0, -1)]
    assert str(frame["started_at"].dtype) == "datetime64[us, UTC]"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    patterns=st.integers(1, 7),
    days=st.integers(1, 4),
    per_day=st.integers(1, 40),
    seed=st.integers(0, 2**32),
    share=st.sampled_from([0.0, 0.02, 0.3]),
)
def test_any_small_config_has_the_right_count_and_one_defect_per_malformed_row(patterns, days, per_day, seed, share):
    frame, kinds = simulate_rows(
        patterns=patterns, days=days, per_day=per_day, seed=seed, end_date=END, malformed_share=share
    )
    assert len(frame) == patterns * days * per_day
    broken = violations(frame)
    expected = pd.DataFrame({k: kinds == k for k in MALFORMED_KINDS})
    pd.testing.assert_frame_equal(broken, expected, check_names=False)


# --- realistic valid rows -------------------------------------------------------------------


def test_valid_rows_are_within_the_contract(small):
    frame = small.frame[small.malformed_kind.isna()]
    assert not violations(frame).to_numpy().any()
    assert frame["status"].isin(EXECUTION_STATUSES).all()
    assert frame["execution_id"].is_unique

    running = frame["status"] == "in_progress"
    assert 0 < running.mean() < 0.02
    assert frame.loc[running, ["duration_ms", "completed_at"]].isna().all().all()
    done = frame[~running]
    assert (done["duration_ms"] > 0).all()
    elapsed_ms = (done["completed_at"] - done["started_at"]) / pd.Timedelta(milliseconds=1)
    np.testing.assert_allclose(elapsed_ms, done["duration_ms"], atol=1e-3)
    assert done["performance_score"].between(0, 1).all()

    assert frame["quality_score"].dropna().between(0, 1).all()
    assert not (frame["quality_score"].notna() & frame["quality_results"].notna()).any()
    documents = frame["quality_results"].dropna().map(json.loads)
    assert documents.map(lambda d: 0 <= d["score"] <= 1 and d["checks"] > 0).all()
    assert 0.07 < len(documents) / len(frame) < 0.13

    ratings = frame["user_rating"].dropna()
    assert 0.27 < len(ratings) / len(frame) < 0.33
    assert set(ratings) <= {0.0, 0.25, 0.5, 0.75, 1.0}

    assert frame["retry_count"].between(0, 3).all()
    assert (frame["retry_count"] == 0).mean() > 0.8
    failing = frame["status"].isin(["failure", "error", "timeout"])
    assert frame.loc[failing, "retry_count"].mean() > 3 * frame.loc[frame["status"] == "success", "retry_count"].mean()


def test_errors_carry_a_class_and_a_message_only_on_failures(small):
    frame = small.frame[small.malformed_kind.isna()]
    failing = frame["status"].isin(["failure", "error", "timeout"])
    assert frame.loc[failing, "error_type"].isin(ERROR_CLASSES).all()
    assert frame.loc[failing, "error_message"].str.len().gt(10).all()
    assert frame.loc[~failing, ["error_type", "error_message"]].isna().all().all()
    assert (frame.loc[frame["status"] == "timeout", "error_type"] == "TimeoutError").all()
    assert set(frame["error_type"].dropna()) == set(ERROR_CLASSES)
    assert set(frame["status"]) == set(EXECUTION_STATUSES)


def test_profiles_latency_and_success_follow_their_ranges(small):
    profiles = pattern_profiles(SMALL)
    assert all(0.75 <= p.success_rate <= 0.97 for p in profiles)
    assert all(200 <= p.latency_median_ms <= 3000 for p in profiles)
    frame = small.frame[small.malformed_kind.isna() & (small.frame["status"] == "success")]
    for profile in profiles:
        rows = frame[frame["pattern_id"] == profile.pattern_id]
        # Lognormal: the median of successful rows sits near the profile's median.
        assert 0.6 < rows["duration_ms"].median() / profile.latency_median_ms < 1.6
    success = small.frame.groupby("pattern_id")["status"].apply(lambda s: (s == "success").mean())
    assert success.between(0.65, 0.99).all()


def test_versions_units_and_unversioned_patterns(small):
    frame = small.frame
    versions = frame["pattern_version"]
    assert versions.dropna().str.fullmatch(r"v\d+").all()
    unversioned = frame.groupby("pattern_id")["pattern_version"].apply(lambda v: v.isna().all())
    assert unversioned.any() and not unversioned.all()
    assert frame["unit_id"].dropna().str.fullmatch(r"user-\d+").all()
    assert 0 < frame["unit_id"].isna().mean() < 0.06
    # A pattern with several versions switches on some day (and runs both on that day).
    per_day = frame.groupby(["pattern_id", frame["started_at"].dt.date])["pattern_version"].nunique()
    assert (per_day == 2).any()


def test_started_at_is_spread_over_the_utc_day(small):
    started = small.frame["started_at"]
    assert started.dt.tz == UTC or str(started.dt.tz) == "UTC"
    seconds = (started - started.dt.floor("D")).dt.total_seconds()
    assert seconds.min() < 3600 and seconds.max() > 82_800
    assert 0.45 < (seconds < 43_200).mean() < 0.55


# --- pattern ids ----------------------------------------------------------------------------


def test_pattern_ids_are_named_then_numbered_and_stable_by_index():
    assert pattern_ids(3) == ["code-review", "summarise-ticket", "sql-generator"]
    ids = pattern_ids(20, nasty_ids=False)
    assert ids[:3] == ["code-review", "summarise-ticket", "sql-generator"]
    assert ids[15] == "pattern-0015"
    assert all(is_safe_partition_key(i) for i in ids)
    assert len(set(ids)) == 20
    assert pattern_ids(8)[:6] == pattern_ids(30)[:6]


def test_nasty_ids_are_included_by_default_from_four_patterns_and_can_be_disabled():
    ids = pattern_ids(6)
    assert ids[2:4] == list(NASTY_PATTERN_IDS)
    assert not any(is_safe_partition_key(i) for i in NASTY_PATTERN_IDS)
    assert "sql-generator" in ids  # displaced, not dropped
    assert not set(NASTY_PATTERN_IDS) & set(pattern_ids(6, nasty_ids=False))
    assert not set(NASTY_PATTERN_IDS) & set(pattern_ids(3))
    frame, _ = simulate_rows(SMALL, days=1, per_day=5, nasty_ids=False)
    assert frame["pattern_id"].map(is_safe_partition_key).all()


# --- malformed rows -------------------------------------------------------------------------


def test_malformed_share_is_honoured_and_every_kind_appears(small):
    malformed = small.malformed_kind.notna()
    # 2% of 200 is exactly 4 rows per pattern and day (a duplicate with no earlier valid row of
    # its pattern that day would stay valid, hence the small slack).
    assert 0 <= SMALL.malformed_share * SMALL.total_rows - malformed.sum() <= 3
    counts = small.malformed_kind.value_counts()
    assert set(counts.index) == set(MALFORMED_KINDS)
    assert counts.min() >= 0.5 * counts.max()


@pytest.mark.parametrize("per_day, share", [(30, 0.02), (20, 0.02), (50, 0.05), (7, 0.3)])
def test_no_pattern_day_gets_more_than_its_share_rounded_up(per_day, share):
    """So a partition's invalid share stays near the configured share (the validity check)."""
    frame, kinds = simulate_rows(patterns=5, days=30, per_day=per_day, seed=2, end_date=END, malformed_share=share)
    per_partition = kinds.notna().groupby([frame["pattern_id"], frame["started_at"].dt.date]).sum()
    assert per_partition.max() <= math.ceil(share * per_day)
    total = kinds.notna().sum()
    expected = share * len(frame)
    assert abs(total - expected) <= 4 * math.sqrt(len(per_partition)) + 1


def test_each_malformed_row_breaks_exactly_the_rule_of_its_kind(small):
    broken = violations(small.frame)
    expected = pd.DataFrame({k: small.malformed_kind == k for k in MALFORMED_KINDS})
    pd.testing.assert_frame_equal(broken, expected, check_names=False)


def test_malformed_values_look_like_real_mistakes(small):
    frame, kinds = small
    assert set(frame.loc[kinds == "unknown_status", "status"]) <= {"exploded", "on_fire", "???"}
    ratings = frame.loc[kinds == "rating_out_of_range", "user_rating"]
    assert ((ratings < 0) | (ratings > 5)).all()  # outside [0, 1] and outside 1-5 stars
    json_rows = frame[kinds == "malformed_quality_json"]
    assert json_rows["quality_score"].isna().all()
    missing = frame[kinds == "finished_without_duration"]
    assert (missing["status"] == "success").all()
    assert missing[["duration_ms", "completed_at"]].isna().all().all()
    duplicates = frame[kinds == DUPLICATE_KIND]
    for index, row in duplicates.iterrows():
        first = frame.loc[: index - 1]
        first = first[first["execution_id"] == row["execution_id"]]
        assert len(first) == 1 and kinds[first.index[0]] is None
        assert first["pattern_id"].iloc[0] == row["pattern_id"]
        assert first["started_at"].iloc[0].date() == row["started_at"].date()


def test_no_malformed_rows_at_share_zero_and_only_chosen_kinds_otherwise():
    frame, kinds = simulate_rows(SMALL, days=2, malformed_share=0.0)
    assert kinds.isna().all() and frame["execution_id"].is_unique
    chosen = ("negative_duration", "unknown_status")
    _, kinds = simulate_rows(SMALL, days=2, malformed_share=0.1, malformed_kinds=chosen)
    assert set(kinds.dropna()) == set(chosen)


def test_collector_quarantines_each_kind_with_its_reason(small, source_engine):
    """The collector reads every malformed kind as its own reason, and nothing else."""
    from feedback_loop_dagster.lib.collect.collector import collect_feedback
    from feedback_loop_dagster.lib.storage.migrations import init_databases
    from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
    from feedback_loop_dagster.lib.storage.writes import bulk_insert

    frame, kinds = small
    # a source that lets an execution id repeat, as a view over raw traces may
    ddl = sa.schema.CreateTable(tables.hook_executions).compile(dialect=source_engine.dialect)
    with source_engine.begin() as conn:
        conn.execute(sa.text(str(ddl).replace("UNIQUE (execution_id)", "CHECK (1)")))
    init_databases(source_engine, source_engine)
    with source_engine.begin() as conn:
        bulk_insert(conn, tables.hook_executions, frame.assign(seq=np.arange(1, len(frame) + 1)))
    keys = register_pattern_ids(source_engine, frame["pattern_id"].unique())
    days = frame["started_at"].dt.date.unique()
    report = collect_feedback(source_engine, source_engine, [(keys[p], d) for p in keys for d in days])
    assert report.source_rows == len(frame)

    q = tables.feedback_quarantine
    with source_engine.connect() as conn:
        reasons = dict(conn.execute(sa.select(q.c.seq, q.c.reason)).all())
    by_row = pd.Series({seq - 1: reason for seq, reason in reasons.items()})
    assert set(by_row.index) == set(kinds[kinds.notna()].index)
    found = by_row.groupby(kinds[by_row.index]).agg(lambda r: sorted(set(r)))
    expected = {
        "unknown_status": r"status: ",
        "negative_duration": r"duration_ms: must be >= 0",
        "quality_out_of_range": r"quality_score: must be [<>]= [01]",
        "rating_out_of_range": r"user_rating: must be [<>]= [01]",
        "negative_retry_count": r"retry_count: must be >= 0",
        "completed_before_started": r"completed_at is before started_at",
        "malformed_quality_json": r"quality_results: not valid JSON",
        "finished_without_duration": r"duration_ms is missing for a finished execution",
        DUPLICATE_KIND: r"execution_id: duplicate of an earlier row in this window",
    }
    for kind, pattern in expected.items():
        assert all(re.match(pattern, r) for r in found[kind]), (kind, found[kind])


def test_config_is_checked():
    with pytest.raises(ValueError, match="patterns"):
        SimulationConfig(patterns=0)
    with pytest.raises(ValueError, match="malformed_share"):
        SimulationConfig(malformed_share=1.5)
    with pytest.raises(ValueError, match="unknown malformed kinds"):
        SimulationConfig(malformed_kinds=("typo",))
    with pytest.raises(ValueError, match="end_date"):
        SimulationConfig(end_date=datetime(2025, 1, 1))
    assert SimulationConfig().resolved().end_date == datetime.now(UTC).date()


# --- writing --------------------------------------------------------------------------------


def _count(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(sa.select(sa.func.count()).select_from(tables.hook_executions))


def _unique_execution_id(engine) -> bool:
    inspector, name = sa.inspect(engine), tables.hook_executions.name
    unique = [c["column_names"] for c in inspector.get_unique_constraints(name)]
    unique += [ix["column_names"] for ix in inspector.get_indexes(name) if ix["unique"]]
    return ["execution_id"] in unique


def test_simulate_to_database_writes_every_row_in_one_go(source_engine):
    config = SimulationConfig(patterns=4, days=3, per_day=150, seed=11, end_date=END, chunk_rows=500)
    written = simulate_to_database(source_engine, config)
    assert written == config.total_rows == _count(source_engine)
    with source_engine.connect() as conn:
        stored = pd.read_sql(sa.select(tables.hook_executions).order_by(tables.hook_executions.c.seq), conn)
    assert stored["seq"].is_monotonic_increasing
    assert set(stored["pattern_id"]) == set(pattern_ids(4))
    # Insertion order follows the simulation (a day's rows, oldest first within each pattern block).
    expected = simulate_rows(config, malformed_kinds=_kinds_for(source_engine)).frame
    assert stored["execution_id"].tolist() == expected["execution_id"].tolist()
    np.testing.assert_array_equal(stored["status"], expected["status"])
    np.testing.assert_allclose(stored["duration_ms"], expected["duration_ms"], equal_nan=True)
    started = pd.to_datetime(stored["started_at"], utc=True)
    assert (started.to_numpy() == expected["started_at"].to_numpy()).all()


def _kinds_for(engine) -> tuple[str, ...]:
    """The kinds simulate_to_database writes into this engine's table."""
    if _unique_execution_id(engine):
        return tuple(k for k in MALFORMED_KINDS if k != DUPLICATE_KIND)
    return MALFORMED_KINDS


def test_write_executions_appends_a_frame_in_chunks(source_engine):
    simulate_to_database(source_engine, SimulationConfig(patterns=1, days=1, per_day=1, seed=1, end_date=END))
    simulated = simulate_rows(patterns=3, days=2, per_day=100, seed=12, end_date=END, malformed_share=0.05)
    frame, kinds = simulated
    written = write_executions(source_engine, simulated, chunk_rows=64)
    duplicates = int((kinds == DUPLICATE_KIND).sum())
    assert duplicates > 0
    expected = len(frame) - duplicates if _unique_execution_id(source_engine) else len(frame)
    assert written == expected
    assert _count(source_engine) == 1 + expected


def test_simulating_the_same_seed_twice_is_refused_and_writes_nothing(source_engine):
    config = SimulationConfig(patterns=2, days=2, per_day=20, seed=5, end_date=END)
    simulate_to_database(source_engine, config)
    with pytest.raises(SimulationConflict, match="already"):
        simulate_to_database(source_engine, config)
    assert _count(source_engine) == config.total_rows
    # Another seed, or the same seed on days that do not overlap, add rows.
    simulate_to_database(source_engine, replace(config, seed=6))
    simulate_to_database(source_engine, replace(config, end_date=END - timedelta(days=2)))
    assert _count(source_engine) == 3 * config.total_rows
