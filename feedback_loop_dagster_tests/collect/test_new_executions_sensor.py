"""`new_executions_sensor` on a real instance: new patterns, late rows, out-of-order commits, restarts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from feedback_loop_dagster.defs.collect.sensors import new_executions_sensor
from feedback_loop_dagster.defs.partitions import patterns_partitions
from feedback_loop_dagster.defs.resources import FeedbackDatabases
import numpy as np

from feedback_loop_dagster.lib.collect.new_executions import SourceCursor, _advance
from feedback_loop_dagster.lib.partition_keys import safe_partition_key
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

    @staticmethod
    def requested(result) -> set[tuple[str, str]]:
        return {
            (r.partition_key.keys_by_dimension["pattern"], r.partition_key.keys_by_dimension["window"])
            for r in result.run_requests or []
        }


def test_new_pattern_is_added_and_each_touched_window_is_requested(instance, engine, migrated_url):
    nasty = "agent|planner, v2"
    insert_executions(engine, [execution(pattern_id=nasty, day=YESTERDAY), execution(pattern_id=nasty, day=TODAY)])
    ticks = Ticks(instance, migrated_url)
    result = ticks.tick()
    key = safe_partition_key(nasty)
    assert instance.get_dynamic_partitions(patterns_partitions.name) == [key]
    assert ticks.requested(result) == {(key, YESTERDAY.isoformat()), (key, TODAY.isoformat())}
    assert all(r.tags["feedback_loop/pattern"] == key for r in result.run_requests)

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
