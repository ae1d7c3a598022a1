"""`new_executions_sensor` on a real instance: new patterns, late rows, out-of-order commits, restarts;
range runs instead of one run per partition; nothing requested again that a backfill collected."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import numpy as np
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.jobs import BATCH_TAG, PATTERN_TAG
from feedback_loop_dagster.defs.code_location.partitions import patterns_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.collect.sensors import new_executions_sensor
from feedback_loop_dagster.defs.in_process_runs.runs import materialize_windows
from feedback_loop_dagster.lib.collect.new_executions import SourceCursor, _advance
from feedback_loop_dagster.lib.safe_partition_key import safe_partition_key
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster_tests.factories import execution, insert_executions

TODAY = datetime.now(UTC).date()
YESTERDAY = TODAY - timedelta(days=1)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


class Ticks:
    """Evaluates the sensor like the daemon does: the cursor goes from one tick to the next."""

    def __init__(self, instance, url):
        self.instance, self.cursor = instance, None
        self.databases = FeedbackDatabases(database_url=url)

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"databases": self.databases}
        )
        result = new_executions_sensor(context)
        self.cursor = result.cursor
        # The daemon applies partition requests; do the same.
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result

    def rectangles(self, result) -> list[tuple[list[str], str, str]]:
        """Each request's (pattern keys, first window, last window), expanded in the instance's order."""
        order = self.instance.get_dynamic_partitions(patterns_partitions.name)
        found = []
        for request in result.run_requests or []:
            assert request.partition_key is None  # range runs, as the schedule's
            first_key, first = request.tags[ASSET_PARTITION_RANGE_START_TAG].split("|")
            last_key, last = request.tags[ASSET_PARTITION_RANGE_END_TAG].split("|")
            found.append((order[order.index(first_key) : order.index(last_key) + 1], first, last))
        return found

    def requested(self, result) -> set[tuple[str, str]]:
        pairs = set()
        for keys, first, last in self.rectangles(result):
            start, end = date.fromisoformat(first), date.fromisoformat(last)
            days = (start + timedelta(days=d) for d in range((end - start).days + 1))
            pairs |= {(k, day.isoformat()) for day in days for k in keys}
        return pairs


@pytest.mark.both_dialects
def test_new_pattern_is_added_and_each_touched_window_is_requested(instance, engine, migrated_url):
    nasty = "agent|planner, v2"
    insert_executions(engine, [execution(pattern_id=nasty, day=YESTERDAY), execution(pattern_id=nasty, day=TODAY)])
    ticks = Ticks(instance, migrated_url)
    result = ticks.tick()
    key = safe_partition_key(nasty)
    assert instance.get_dynamic_partitions(patterns_partitions.name) == [key]
    assert ticks.requested(result) == {(key, YESTERDAY.isoformat()), (key, TODAY.isoformat())}
    assert len(result.run_requests) == 1  # two consecutive windows of one pattern: one range run
    assert all(r.tags[PATTERN_TAG] == key for r in result.run_requests)

    repeat = ticks.tick()
    assert not repeat.run_requests and repeat.skip_reason is not None


def test_late_rows_for_an_old_window_request_that_window_again(instance, engine, migrated_url):
    old = TODAY - timedelta(days=20)
    insert_executions(engine, [execution(day=TODAY)])
    ticks = Ticks(instance, migrated_url)
    first = ticks.tick()
    insert_executions(engine, [execution(day=old)])
    late = ticks.tick()
    assert ticks.requested(late) == {("code-review", old.isoformat())}
    assert {r.run_key for r in late.run_requests}.isdisjoint({r.run_key for r in first.run_requests})


def test_a_row_committed_after_a_larger_seq_still_triggers_a_run(instance, engine, migrated_url):
    insert_executions(engine, [execution(seq=1, day=TODAY), execution(seq=3, day=TODAY)])
    ticks = Ticks(instance, migrated_url)
    ticks.tick()
    # seq 2 was taken by a transaction that commits only now, for an older window.
    insert_executions(engine, [execution(seq=2, day=YESTERDAY)])
    result = ticks.tick()
    assert ticks.requested(result) == {("code-review", YESTERDAY.isoformat())}
    assert not ticks.tick().run_requests


def test_the_cursor_survives_a_restart(instance, engine, migrated_url):
    insert_executions(engine, [execution(seq=1, day=TODAY), execution(seq=5, day=TODAY)])
    ticks = Ticks(instance, migrated_url)
    ticks.tick()
    saved = ticks.cursor
    restarted = Ticks(instance, migrated_url)
    restarted.cursor = saved  # what the daemon stores between ticks
    assert not restarted.tick().run_requests
    insert_executions(engine, [execution(seq=3, day=YESTERDAY)])
    assert restarted.requested(restarted.tick()) == {("code-review", YESTERDAY.isoformat())}


def test_rows_outside_the_partition_range_are_not_requested(instance, engine, migrated_url):
    insert_executions(engine, [execution(day=date(2000, 1, 1))])
    result = Ticks(instance, migrated_url).tick()
    assert not result.run_requests


def test_cursor_gaps_expire_after_the_overlap():
    cursor = _advance(SourceCursor(), np.array([1, 2, 5, 9]), overlap=100)
    assert cursor.high_water == 9 and cursor.gaps == [(3, 4), (6, 8)]
    cursor = _advance(cursor, np.array([4, 200]), overlap=100)
    assert cursor.high_water == 200
    assert cursor.gaps == [(101, 199)]
    assert SourceCursor.from_json(cursor.to_json()) == cursor


def _collect(instance, url, pattern_keys, first, last):
    """What `feedback-loop backfill` does for the first stage: range runs of feedback_dataset."""
    materialize_windows(
        build_definitions(FeedbackDatabases(database_url=url)), instance, pattern_keys, first, last,
        asset_selection=[dg.AssetKey("feedback_dataset")],
    )


def test_many_partitions_come_as_range_runs_over_blocks_of_patterns_and_windows(instance, engine, migrated_url):
    patterns = ["alpha", "beta", "gamma"]
    days = [TODAY - timedelta(days=d) for d in (6, 5, 4, 3)]
    insert_executions(engine, [execution(pattern_id=p, day=d) for p in patterns for d in days])
    ticks = Ticks(instance, migrated_url)
    result = ticks.tick()
    # 3 patterns x 4 windows = 12 partitions, one rectangle: one run, not twelve.
    assert ticks.rectangles(result) == [(patterns, days[0].isoformat(), days[-1].isoformat())]
    (request,) = result.run_requests
    assert request.tags[BATCH_TAG] == "alpha..gamma" and PATTERN_TAG not in request.tags

    # Later: today's rows for alpha and gamma (not neighbours) and a late row for beta's oldest day.
    insert_executions(engine, [execution(pattern_id="alpha", day=TODAY), execution(pattern_id="gamma", day=TODAY),
                               execution(pattern_id="beta", day=days[0])])
    later = ticks.tick()
    assert sorted(ticks.rectangles(later)) == [
        (["alpha"], TODAY.isoformat(), TODAY.isoformat()),
        (["beta"], days[0].isoformat(), days[0].isoformat()),
        (["gamma"], TODAY.isoformat(), TODAY.isoformat()),
    ]


def test_first_tick_after_a_backfill_requests_nothing_already_collected(instance, engine, migrated_url):
    patterns = ["alpha", "beta"]
    days = [TODAY - timedelta(days=d) for d in (5, 4, 3, 2)]
    insert_executions(engine, [execution(pattern_id=p, day=d, minute=m) for p in patterns for d in days for m in (5, 60)])
    keys = register_pattern_ids(engine, patterns)
    instance.add_dynamic_partitions(patterns_partitions.name, [keys[p] for p in patterns])
    _collect(instance, migrated_url, [keys[p] for p in patterns], days[0], days[-1])

    ticks = Ticks(instance, migrated_url)  # turned on now: no cursor yet, it scans from the start
    first = ticks.tick()
    assert not first.run_requests
    assert "all collected already" in first.skip_reason.skip_message
    assert SourceCursor.from_json(ticks.cursor).high_water > 0  # and it moved past them

    # What arrives after the backfill is requested, and only that.
    insert_executions(engine, [execution(pattern_id="beta", day=TODAY)])
    assert ticks.requested(ticks.tick()) == {("beta", TODAY.isoformat())}


def test_a_late_row_of_a_collected_partition_is_still_requested(instance, engine, migrated_url):
    insert_executions(engine, [execution(seq=1, day=YESTERDAY), execution(seq=3, day=YESTERDAY)])
    keys = register_pattern_ids(engine, ["code-review"])
    instance.add_dynamic_partitions(patterns_partitions.name, list(keys.values()))
    _collect(instance, migrated_url, list(keys.values()), YESTERDAY, YESTERDAY)
    ticks = Ticks(instance, migrated_url)
    assert not ticks.tick().run_requests
    # seq 2 commits only now, into the partition the backfill collected: the sensor's overlap
    # re-scan finds it, and the warehouse does not hold it, so the partition runs again.
    insert_executions(engine, [execution(seq=2, day=YESTERDAY)])
    assert ticks.requested(ticks.tick()) == {("code-review", YESTERDAY.isoformat())}
    assert not ticks.tick().run_requests
