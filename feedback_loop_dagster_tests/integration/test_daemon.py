"""The deployment path end to end: dagster-daemon and dagster-webserver over PostgreSQL.

A sensor that finds a new pattern adds its partition and runs the whole loop (as a range run); late
rows rerun their window; a backfill launched through the webserver's GraphQL API completes through the daemon, each
run processing its whole partition set, and a partition with too many invalid rows fails alone in it;
range runs submitted with the dagster-graphql client cover a block of patterns x windows in one run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    BACKFILL_ID_TAG,
)
from dagster_graphql import DagsterGraphQLClientError

from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.jobs import BATCH_TAG, PATTERN_TAG
from feedback_loop_dagster.defs.code_location.partitions import patterns_partitions
from feedback_loop_dagster.defs.code_location.schedules import range_run_requests
from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions
from feedback_loop_dagster.lib.partition_status import STAGES
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import get_engine
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster_tests.integration.data import (
    collected_rows,
    executions,
    insert,
    loop_asset_keys,
    materialised,
    registry_problems,
    runs,
    source_rows,
)
from feedback_loop_dagster_tests.integration.harness import DESIGN_ASSETS

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

LOOP_ASSETS = loop_asset_keys(build_definitions())


def _successful_run(d, tags: dict[str, str], what: str) -> dg.DagsterRun:
    def find():
        found = runs(d.instance, tags)
        failed = [r for r in found if r.status == dg.DagsterRunStatus.FAILURE and not _retried(d, r)]
        assert not failed, f"run {failed[0].run_id} failed\n{d.log_tail()}"
        return next((r for r in found if r.status == dg.DagsterRunStatus.SUCCESS), None)

    return d.wait_until(find, what=what)


def _retried(d, run: dg.DagsterRun) -> bool:
    return bool(runs(d.instance, {"dagster/parent_run_id": run.run_id}))


def test_the_loop_assets_are_those_of_the_design():
    assert LOOP_ASSETS == set(DESIGN_ASSETS) - {"hook_executions"}


def test_sensor_adds_a_new_pattern_runs_the_loop_and_reruns_a_late_window(deployment):
    d = deployment
    engine = get_engine(d.warehouse_url)
    pattern = "it-sensor-new"
    window = datetime.now(UTC).date() - timedelta(days=3)
    insert(engine, executions(pattern, window, 30))
    assert pattern not in d.instance.get_dynamic_partitions(patterns_partitions.name)

    d.start_sensor("new_executions_sensor")
    try:
        _sensor_path(d, engine, pattern, window)
    finally:
        d.stop_sensor("new_executions_sensor")  # the other tests insert rows of their own


def _sensor_path(d, engine, pattern, window):
    partition = f"{pattern}|{window}"
    # The sensor's runs are range runs like the schedule's; here the rectangle is one partition.
    first = _successful_run(d, {PATTERN_TAG: pattern}, what="the sensor's run")
    assert first.tags[ASSET_PARTITION_RANGE_START_TAG] == first.tags[ASSET_PARTITION_RANGE_END_TAG] == partition
    assert pattern in d.instance.get_dynamic_partitions(patterns_partitions.name)
    # The whole graph, for exactly that partition.
    assert materialised(d.instance, first.run_id) == {(asset, partition) for asset in LOOP_ASSETS}
    assert collected_rows(engine, pattern, window) == 30

    # Late rows for that (now older) window arrive: the sensor runs that window again.
    insert(engine, executions(pattern, window, 12, tag="late"))

    def rerun():
        new = [r for r in runs(d.instance, {PATTERN_TAG: pattern}) if r.run_id != first.run_id]
        assert all(r.tags[ASSET_PARTITION_RANGE_END_TAG] == partition for r in new), [r.tags for r in new]
        return next((r for r in new if r.status == dg.DagsterRunStatus.SUCCESS), None)

    d.wait_until(rerun, what="the late window's rerun")
    assert collected_rows(engine, pattern, window) == 42 == source_rows(engine, pattern, window)
    assert registry_problems(engine) == []


@dataclass
class Backfill:
    id: str
    status: BulkActionStatus
    runs: list[dg.DagsterRun]
    patterns: list[str]
    windows: list[date]
    partitions: set[str]
    bad: tuple[str, date]
    bad_key: str


@pytest.fixture(scope="module")
def backfill(deployment) -> Backfill:
    """One asset backfill of every loop asset over 2 patterns x 3 windows of 25 rows, launched through
    the webserver's GraphQL API and waited for; one window of one pattern has 10 of 16 rows malformed.
    Two tests read it: how the daemon ran the backfill, and how the bad partition failed alone (one
    backfill, not two: each costs a few run workers)."""
    d = deployment
    engine = get_engine(d.warehouse_url)
    patterns = ["it-bf-a", "it-bf-b"]
    windows = [date(2026, 2, 1) + timedelta(days=k) for k in range(3)]
    bad = (patterns[1], windows[1])
    for p in patterns:
        for w in windows:
            frame = executions(p, w, 16 if (p, w) == bad else 25)
            if (p, w) == bad:
                frame.loc[:9, "status"] = "exploded"
            insert(engine, frame)
    keys = register_pattern_ids(engine, patterns)  # what `feedback-loop patterns sync` does
    add_pattern_partitions(d.instance, [keys[p] for p in patterns])
    partitions = {f"{keys[p]}|{w}" for p in patterns for w in windows}

    backfill_id = d.launch_backfill(sorted(partitions), sorted(LOOP_ASSETS), title="integration backfill with a bad partition")

    def finished():
        backfill = d.instance.get_backfill(backfill_id)
        return backfill.status if backfill.status != BulkActionStatus.REQUESTED else None

    status = d.wait_until(finished, what="the backfill to finish")
    return Backfill(backfill_id, status, runs(d.instance, {BACKFILL_ID_TAG: backfill_id}), patterns, windows, partitions,
                    bad, f"{keys[bad[0]]}|{bad[1]}")


def test_backfill_launched_through_graphql_completes_through_the_daemon(deployment, backfill):
    d = deployment
    engine = get_engine(d.warehouse_url)
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, d.log_tail()

    # Dagster splits a pattern x window set into one range run per key of its smaller dimension
    # (here: 2 patterns < 3 windows), not one run per partition (6).
    assert len(backfill.runs) == 2
    covered: set[tuple[str, str]] = set()
    for run in backfill.runs:
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert ASSET_PARTITION_RANGE_START_TAG in run.tags and ASSET_PARTITION_RANGE_END_TAG in run.tags
        done = materialised(d.instance, run.run_id)
        # Each run processed its whole range (3 windows), not only its first key.
        assert len({p for _, p in done}) == 3
        covered |= done
    assert covered == {(asset, p) for asset in LOOP_ASSETS for p in backfill.partitions}
    for p in backfill.patterns:
        for w in backfill.windows:
            assert collected_rows(engine, p, w) == (16 if (p, w) == backfill.bad else 25)


def test_range_run_submitted_with_the_graphql_client_covers_a_block_in_one_run(deployment):
    d = deployment
    engine = get_engine(d.warehouse_url)
    patterns = ["it-range-a", "it-range-b", "it-range-c"]
    windows = [date(2026, 1, 10) + timedelta(days=k) for k in range(4)]
    for p in patterns:
        for w in windows:
            insert(engine, executions(p, w, 10))
    keys = register_pattern_ids(engine, patterns)
    add_pattern_partitions(d.instance, [keys[p] for p in patterns])
    block = [k for k in d.instance.get_dynamic_partitions(patterns_partitions.name) if k in set(keys.values())]

    (request,) = range_run_requests(block, windows[0], windows[-1])
    assert request.tags[BATCH_TAG]
    client = d.client()
    try:
        run_id = client.submit_job_execution("feedback_loop_job", tags=request.tags)
    except DagsterGraphQLClientError as exc:  # pragma: no cover - shows the server's reason
        pytest.fail(f"submit_job_execution failed: {exc}\n{d.log_tail()}")

    d.wait_until(
        lambda: client.get_run_status(run_id) in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE),
        what="the range run",
    )
    assert client.get_run_status(run_id) == dg.DagsterRunStatus.SUCCESS, d.log_tail()
    expected = {f"{keys[p]}|{w}" for p in patterns for w in windows}
    assert materialised(d.instance, run_id) == {(asset, p) for asset in LOOP_ASSETS for p in expected}
    assert all(collected_rows(engine, p) == 40 for p in patterns)


def test_a_bad_partition_fails_alone_in_a_backfill_through_the_daemon(deployment, backfill):
    """One window of one pattern has 10 of 16 rows malformed: its validity check fails, every
    later stage skips it and says why, and every other partition of the same runs goes through."""
    d = deployment
    engine = get_engine(d.warehouse_url)
    partitions, bad, bad_key, backfill_runs = backfill.partitions, backfill.bad, backfill.bad_key, backfill.runs
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
    assert backfill_runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in backfill_runs), d.log_tail()
    covered = set().union(*(materialised(d.instance, r.run_id) for r in backfill_runs))
    assert covered == {(asset, p) for asset in LOOP_ASSETS for p in partitions}

    check = dg.AssetCheckKey(dg.AssetKey("feedback_dataset"), "feedback_validity_share")
    history = d.instance.event_log_storage.get_asset_check_execution_history(check, limit=100)
    verdicts = {r.partition: r.status.value for r in history if r.run_id in {run.run_id for run in backfill_runs}}
    assert verdicts == {p: "FAILED" if p == bad_key else "SUCCEEDED" for p in partitions}

    for asset in STAGES[1:]:
        (record,) = d.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[bad_key]), limit=1
        ).records
        metadata = record.asset_materialization.metadata
        assert metadata["status"].value == "skipped" and metadata["pattern_id"].value == bad[0]
        assert metadata["reason"].value.startswith("feedback_dataset failed: 62.5% of rows invalid (10 of 16)")
    with engine.connect() as conn:
        statuses = conn.execute(
            sa.select(tables.partition_status.c.pattern_id, tables.partition_status.c.window_start,
                      tables.partition_status.c.status).where(tables.partition_status.c.pattern_id.in_(backfill.patterns))
        ).all()
    assert {(p, w) for p, w, status in statuses if status != "ok"} == {bad}
    assert len(statuses) == len(partitions) * len(STAGES)
