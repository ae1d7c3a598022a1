"""The collector on SQLite and PostgreSQL: reasons, accounting, idempotency, set-based ranges."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from feedback_loop_dagster.lib.collect.collector import collect_feedback
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import StorageError, get_engine
from feedback_loop_dagster.lib.storage.partition_key_map import UnknownPartitionKey, register_pattern_ids
from feedback_loop_dagster_tests.factories import DAY, execution, insert_executions

# The collector is SQL compiled for each dialect (lib/collect/rules.py, `Dialect`).
pytestmark = pytest.mark.both_dialects

BAD_ROWS = {
    "status: not an allowed value": dict(status="exploded"),
    "duration_ms: must be >= 0": dict(duration_ms=-5.0),
    "quality_score: must be <= 1": dict(quality_score=1.7),
    "user_rating: must be <= 1": dict(user_rating=7.5),
    "user_rating: must be >= 0": dict(user_rating=-1.0),
    "retry_count: must be >= 0": dict(retry_count=-2),
    "completed_at is before started_at": dict(completed_at=datetime(2026, 3, 1, tzinfo=UTC)),
    "quality_results: not valid JSON": dict(quality_score=None, quality_results='{"score": '),
    "duration_ms is missing for a finished execution": dict(duration_ms=None, completed_at=None),
}


def _table(engine, table):
    with engine.connect() as conn:
        return conn.execute(sa.select(table)).mappings().all()


def _rows_per_partition(engine):
    with engine.connect() as conn:
        return {
            (r.pattern_key, r.window_start): (r.source_rows, r.valid_rows, r.quarantined_rows)
            for r in conn.execute(sa.select(tables.feedback_partitions))
        }


def test_every_kind_of_bad_row_is_quarantined_with_its_reason(engine):
    bad = {reason: execution(**override) for reason, override in BAD_ROWS.items()}
    insert_executions(engine, [execution() for _ in range(5)] + list(bad.values()))
    register_pattern_ids(engine, ["code-review"])

    report = collect_feedback(engine, engine, [("code-review", DAY)])

    quarantined = {r["execution_id"]: r for r in _table(engine, tables.feedback_quarantine)}
    assert {r["execution_id"]: r["reason"] for r in quarantined.values()} == {
        row["execution_id"]: reason for reason, row in bad.items()
    }
    assert report.reasons == {reason: 1 for reason in BAD_ROWS}
    assert (report.source_rows, report.valid_rows, report.quarantined_rows) == (14, 5, 9)
    raw = quarantined[bad["status: not an allowed value"]["execution_id"]]["raw"]
    assert json.loads(raw)["status"] == "exploded"


def test_repeated_execution_id_in_a_loose_source_is_quarantined(engine, tmp_path):
    # hook_executions enforces uniqueness; a user's view over raw traces may not.
    source = get_engine(f"sqlite:///{tmp_path / 'loose.db'}")
    ddl = sa.schema.CreateTable(tables.hook_executions).compile(dialect=source.dialect)
    with source.begin() as conn:
        conn.execute(sa.text(str(ddl).replace("UNIQUE (execution_id)", "CHECK (1)")))
    first = execution(execution_id="same")
    insert_executions(source, [first, execution(execution_id="same", minute=90, status="failure")])
    register_pattern_ids(engine, ["code-review"])
    report = collect_feedback(source, engine, [("code-review", DAY)])
    assert report.reasons == {"execution_id: duplicate of an earlier row in this window": 1}
    assert [r["status"] for r in _table(engine, tables.feedback)] == ["success"]


def test_status_synonyms_json_quality_and_star_ratings_are_normalised(engine):
    insert_executions(
        engine,
        [
            execution(execution_id="a", status="OK ", quality_score=None, quality_results='{"score": 0.25}'),
            execution(execution_id="b", status="timed_out", user_rating=5.0),
            execution(execution_id="c", status="running", duration_ms=None, completed_at=None),
            execution(execution_id="d", duration_ms=None),  # derived from completed_at - started_at
        ],
    )
    register_pattern_ids(engine, ["code-review"])
    report = collect_feedback(engine, engine, [("code-review", DAY)])
    assert report.quarantined_rows == 0
    rows = {r["execution_id"]: r for r in _table(engine, tables.feedback)}
    assert rows["a"]["status"] == "success" and rows["a"]["quality_score"] == pytest.approx(0.25)
    assert rows["b"]["status"] == "timeout" and rows["b"]["user_rating"] == pytest.approx(1.0)
    assert rows["c"]["status"] == "in_progress" and rows["c"]["duration_ms"] is None
    assert rows["d"]["duration_ms"] == pytest.approx(250.0)


def test_accounting_invariant_and_idempotent_rematerialisation(engine):
    rows = [execution(minute=i, status="exploded" if i % 7 == 0 else "success") for i in range(60)]
    rows += [execution(day=DAY + timedelta(days=1), minute=i) for i in range(10)]
    insert_executions(engine, rows)
    register_pattern_ids(engine, ["code-review"])
    partitions = [("code-review", DAY), ("code-review", DAY + timedelta(days=1))]

    collect_feedback(engine, engine, partitions)
    first = (_table(engine, tables.feedback), _table(engine, tables.feedback_quarantine))
    collect_feedback(engine, engine, partitions)
    second = (_table(engine, tables.feedback), _table(engine, tables.feedback_quarantine))

    assert sorted(r["execution_id"] for r in first[0]) == sorted(r["execution_id"] for r in second[0])
    assert len(second[1]) == len(first[1]) == 9
    for source_rows, valid, quarantined in _rows_per_partition(engine).values():
        assert valid + quarantined == source_rows
    assert _rows_per_partition(engine)[("code-review", DAY)] == (60, 51, 9)


def test_range_run_equals_partition_by_partition_and_keeps_other_partitions(engine):
    ids = ["code-review", "agent|planner, v2"]
    rows = [execution(pattern_id=p, day=DAY + timedelta(days=d), minute=m) for p in ids for d in range(3) for m in range(5)]
    insert_executions(engine, rows)
    keys = register_pattern_ids(engine, ids)
    pairs = [(keys[p], DAY + timedelta(days=d)) for p in ids for d in range(3)]

    report = collect_feedback(engine, engine, pairs)
    assert [p.source_rows for p in report.partitions] == [5] * 6
    range_rows = sorted(r["execution_id"] for r in _table(engine, tables.feedback))

    for pair in pairs:
        collect_feedback(engine, engine, [pair])
    assert sorted(r["execution_id"] for r in _table(engine, tables.feedback)) == range_rows
    # the original id is kept on every row; the key is only the partition's name
    assert {r["pattern_id"] for r in _table(engine, tables.feedback)} == set(ids)

    # Re-collecting one partition leaves the others untouched.
    collect_feedback(engine, engine, [pairs[0]])
    assert len(_table(engine, tables.feedback)) == 30


def test_partition_without_rows_is_recorded_as_empty(engine):
    register_pattern_ids(engine, ["code-review"])
    report = collect_feedback(engine, engine, [("code-review", DAY)])
    assert report.partitions[0].source_rows == 0
    assert _rows_per_partition(engine) == {("code-review", DAY): (0, 0, 0)}


def test_unknown_partition_key_is_a_clear_error(engine):
    with pytest.raises(UnknownPartitionKey, match="no pattern is registered"):
        collect_feedback(engine, engine, [("never-seen", DAY)])


def test_missing_source_table_is_a_clear_error_and_writes_nothing(engine, database_url, tmp_path):
    # A separate, empty source database: the table does not exist there.
    empty_source = get_engine(f"sqlite:///{tmp_path / 'empty-source.db'}")
    register_pattern_ids(engine, ["code-review"])
    with pytest.raises(StorageError, match="source table 'hook_executions' not found"):
        collect_feedback(empty_source, engine, [("code-review", DAY)])
    assert _table(engine, tables.feedback_partitions) == []


def test_missing_source_columns_are_named(engine, tmp_path):
    source = get_engine(f"sqlite:///{tmp_path / 'view-source.db'}")
    with source.begin() as conn:
        conn.execute(sa.text("CREATE TABLE hook_executions (seq INTEGER, execution_id TEXT, pattern_id TEXT)"))
    register_pattern_ids(engine, ["code-review"])
    with pytest.raises(StorageError, match="missing required column.*started_at, status"):
        collect_feedback(source, engine, [("code-review", DAY)])
