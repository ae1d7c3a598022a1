"""A range run over several patterns and windows: every partition shows its own
figures, and a partition that fails (its validity check, or an error in a later stage) fails alone:
it records why, the later stages skip exactly it, every other partition goes through every stage."""

import logging
from datetime import date, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.partitions import partition_key, pattern_window_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions, materialize_windows
from feedback_loop_dagster.defs.per_partition.loop import each_partition
from feedback_loop_dagster.defs.per_partition.metadata import report_partitions
from feedback_loop_dagster.lib.partition_status import STAGES, stage_outcomes
from feedback_loop_dagster.lib.propose import analyzers as analyzer_registry
from feedback_loop_dagster.lib.propose.analyzers import analyzer
from feedback_loop_dagster.lib.registry.versions import register_version
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster_tests.factories import execution, insert_executions

W1 = date(2026, 3, 2)
WINDOWS = [W1 + timedelta(days=d) for d in range(3)]
PATTERNS = ["alpha", "beta", "gamma|nasty, id"]  # the last one gets a hashed partition key
BAD = ("beta", WINDOWS[1])  # 10 of its 16 rows are malformed
LATER = STAGES[1:]


def rows_of(pattern: str, window: date) -> list[dict]:
    if (pattern, window) == BAD:
        return [execution(pattern_id=pattern, day=window, minute=m, status="exploded" if m < 10 else "success")
                for m in range(16)]
    # A different volume per partition, so each partition's own count is recognisable.
    n = 20 + 3 * PATTERNS.index(pattern) + WINDOWS.index(window)
    return [execution(pattern_id=pattern, day=window, minute=m) for m in range(n)]


@pytest.fixture
def loaded(engine, migrated_url):
    insert_executions(engine, [row for p in PATTERNS for w in WINDOWS for row in rows_of(p, w)])
    keys = register_pattern_ids(engine, PATTERNS)
    with engine.begin() as conn:
        for p in PATTERNS:
            register_version(conn, p, "v1", {"timeout_ms": 2000})
    defs = build_definitions(FeedbackDatabases(database_url=migrated_url))
    with dg.instance_for_test() as instance:
        add_pattern_partitions(instance, sorted(keys.values()))
        yield defs, instance, keys


def metadata_by_partition(result, asset: str) -> dict[str, dict]:
    return {m.partition: m.metadata for m in result.asset_materializations_for_node(asset)}


def test_a_partition_over_its_invalid_share_fails_alone_and_is_skipped_downstream(loaded, engine):
    defs, instance, keys = loaded
    (result,) = materialize_windows(defs, instance, sorted(keys.values()), WINDOWS[0], WINDOWS[-1])
    assert result.success
    bad = str(partition_key(keys[BAD[0]], BAD[1]))
    everyone = {str(partition_key(keys[p], w)): (p, w) for p in PATTERNS for w in WINDOWS}

    checks = {
        e.event_specific_data.partition: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == "feedback_validity_share"
    }
    assert set(checks) == set(everyone) and [p for p, c in checks.items() if not c.passed] == [bad]
    why = "62.5% of rows invalid (10 of 16), above max_invalid_share 5.0%"
    assert checks[bad].description.startswith(why)

    # Every asset materialised every partition, each with its own pattern id and status.
    for asset in STAGES:
        metadata = metadata_by_partition(result, asset)
        assert set(metadata) == set(everyone), asset
        assert {k: m["pattern_id"].value for k, m in metadata.items()} == {k: p for k, (p, _) in everyone.items()}
        assert {k for k, m in metadata.items() if m["status"].value != "ok"} == {bad}, asset
        if asset != "feedback_dataset":
            assert metadata[bad]["status"].value == "skipped"
            assert metadata[bad]["reason"].value.startswith(f"feedback_dataset failed: {why}")
            assert "metrics" not in metadata[bad] and "proposals" not in metadata[bad]

    # Each feedback partition's figures are its own, the failed one's included.
    collected = metadata_by_partition(result, "feedback_dataset")
    assert {k: m["dagster/row_count"].value for k, m in collected.items()} == {
        k: 6 if k == bad else len(rows_of(p, w)) for k, (p, w) in everyone.items()}
    analysed = metadata_by_partition(result, "pattern_analysis")
    assert all(analysed[k]["executions"].value > 0 for k in everyone if k != bad)

    # The warehouse says the same: the bad partition's rows are collected, it has no analysis,
    # and its outcome at every later stage is a skip naming the failure.
    with engine.connect() as conn:
        outcomes = stage_outcomes(conn, keys[BAD[0]], BAD[1])
        metrics = set(conn.execute(sa.select(tables.pattern_metrics.c.pattern_id, tables.pattern_metrics.c.window_start)))
        assert conn.scalar(sa.select(sa.func.count()).select_from(tables.feedback_quarantine)) == 10
    assert outcomes["feedback_dataset"].status == "failed" and outcomes["feedback_dataset"].run_id == result.run_id
    assert {s: outcomes[s].status for s in LATER} == dict.fromkeys(LATER, "skipped")
    assert metrics == {(p, w) for p in PATTERNS for w in WINDOWS} - {BAD}
    for p in PATTERNS:
        for w in WINDOWS:
            if (p, w) != BAD:
                with engine.connect() as conn:
                    assert {o.status for o in stage_outcomes(conn, keys[p], w).values()} == {"ok"}

    # Collected again with a more tolerant threshold, the partition passes and the loop runs it.
    tolerant = {"ops": {"feedback_dataset": {"config": {"max_invalid_share": 0.7}}}}
    (again,) = materialize_windows(defs, instance, [keys[BAD[0]]], BAD[1], BAD[1], run_config=tolerant)
    assert all(m["status"].value == "ok" for a in STAGES for m in metadata_by_partition(again, a).values())
    with engine.connect() as conn:
        assert {o.status for o in stage_outcomes(conn, keys[BAD[0]], BAD[1]).values()} == {"ok"}


def test_an_error_in_a_later_stage_stays_in_its_partition(loaded, engine):
    """A proposal plug-in that raises for one partition: that partition fails at
    improvement_proposals with the error as its reason, the next stages skip it, and every
    other partition (the same pattern's other windows included) goes through."""
    defs, instance, keys = loaded
    broken = ("alpha", WINDOWS[1])

    @analyzer("breaks_on_one_partition")
    def breaks_on_one_partition(evidence):
        if (evidence.pattern_id, evidence.window) == broken:
            raise ZeroDivisionError("plug-in bug")
        return []

    try:
        (result,) = materialize_windows(defs, instance, sorted(keys.values()), WINDOWS[0], WINDOWS[-1])
    finally:
        analyzer_registry.unregister("breaks_on_one_partition")
    assert result.success
    failed = str(partition_key(keys[broken[0]], broken[1]))
    proposals = metadata_by_partition(result, "improvement_proposals")
    assert proposals[failed]["status"].value == "failed"
    assert proposals[failed]["reason"].value == "ZeroDivisionError: plug-in bug"
    assert [k for k, m in proposals.items() if m["status"].value == "failed"] == [failed]
    for asset in STAGES[STAGES.index("experiments"):]:
        skipped = metadata_by_partition(result, asset)[failed]
        assert skipped["status"].value == "skipped"
        assert skipped["reason"].value == "improvement_proposals failed: ZeroDivisionError: plug-in bug"
    # One error line in the run's log names the partition and carries the traceback.
    (logged,) = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.ERROR]
    assert logged.startswith(f"improvement_proposals failed for {failed}: ZeroDivisionError: plug-in bug")
    assert "Traceback" in logged
    with engine.connect() as conn:
        outcomes = stage_outcomes(conn, keys[broken[0]], broken[1])
    assert [outcomes[s].status for s in STAGES] == ["ok", "ok", "failed", *["skipped"] * 4]


# A stage built for the test on the same runner: each partition writes a row, one then raises.
WRITTEN = sa.Table("partition_writes", sa.MetaData(), sa.Column("partition", sa.Text, primary_key=True))


def _write_then_fail_on(failing: str):
    @dg.asset(name="improvement_proposals", partitions_def=pattern_window_partitions,
              backfill_policy=dg.BackfillPolicy.single_run())
    def stage(context: dg.AssetExecutionContext, databases: FeedbackDatabases) -> dg.MaterializeResult:
        def step(conn, partition):
            conn.execute(WRITTEN.insert().values(partition=partition.dagster_key))
            if partition.dagster_key == failing:
                raise ValueError("no good")
            return partition.dagster_key

        outcomes = each_partition(context, databases.warehouse, "improvement_proposals", step)
        report_partitions(context, outcomes, lambda o: {"written": o.value})
        return dg.MaterializeResult()

    return stage


@pytest.mark.both_dialects
def test_a_failing_partition_keeps_none_of_its_changes_and_the_others_keep_theirs(loaded, engine, migrated_url):
    _, instance, keys = loaded
    WRITTEN.create(engine)
    failing = str(partition_key(keys["beta"], WINDOWS[2]))
    stage = _write_then_fail_on(failing)
    result = dg.materialize(
        [stage], instance=instance, resources={"databases": FeedbackDatabases(database_url=migrated_url)},
        tags={"dagster/asset_partition_range_start": str(partition_key(sorted(keys.values())[0], WINDOWS[0])),
              "dagster/asset_partition_range_end": str(partition_key(sorted(keys.values())[-1], WINDOWS[-1]))},
    )
    assert result.success
    everyone = {str(partition_key(keys[p], w)) for p in PATTERNS for w in WINDOWS}
    with engine.connect() as conn:
        written = set(conn.scalars(sa.select(WRITTEN.c.partition)))
    assert written == everyone - {failing}
    metadata = metadata_by_partition(result, "improvement_proposals")
    assert metadata[failing]["status"].value == "failed" and metadata[failing]["reason"].value == "ValueError: no good"
    assert all(metadata[k]["written"].value == k for k in everyone - {failing})
