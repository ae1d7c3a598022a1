"""daily_loop_schedule: the latest complete window of every pattern, in a few range runs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.jobs import BATCH_TAG, PATTERN_TAG
from feedback_loop_dagster.defs.code_location.partitions import patterns_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.code_location.schedules import (
    PATTERNS_PER_RUN,
    daily_loop_schedule,
    range_run_requests,
)
from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster_tests.factories import execution, insert_executions

WINDOW = date(2026, 3, 9)
TICK = datetime(2026, 3, 10, 0, 30, tzinfo=UTC)  # 00:30 UTC the day after the window


def _evaluate(instance, when=TICK):
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context:
        return daily_loop_schedule.evaluate_tick(context)


def test_schedule_is_daily_after_the_window_closes_and_wired_in_the_code_location():
    assert daily_loop_schedule.cron_schedule == "30 0 * * *"
    assert daily_loop_schedule.execution_timezone == "UTC"
    schedule = build_definitions().get_repository_def().get_schedule_def("daily_loop_schedule")
    assert schedule.job_name == "feedback_loop_job"


def test_schedule_covers_every_pattern_of_the_instance_in_a_few_range_runs():
    keys = [f"pattern-{i:05d}" for i in range(1_200)]
    with dg.instance_for_test() as instance:
        add_pattern_partitions(instance, keys)
        result = _evaluate(instance)
    requests = result.run_requests
    assert len(requests) == -(-len(keys) // PATTERNS_PER_RUN) == 3
    covered = []
    for request in requests:
        start = request.tags[ASSET_PARTITION_RANGE_START_TAG]
        end = request.tags[ASSET_PARTITION_RANGE_END_TAG]
        first, last = start.split("|")[0], end.split("|")[0]
        assert start.endswith(f"|{WINDOW}") and end.endswith(f"|{WINDOW}")  # the window that closed
        assert BATCH_TAG in request.tags and PATTERN_TAG not in request.tags
        assert request.run_key and str(WINDOW) in request.run_key
        covered += keys[keys.index(first) : keys.index(last) + 1]
    assert covered == keys  # every pattern exactly once, in the instance's order


def test_schedule_run_for_one_pattern_carries_its_pattern_tag_and_skips_without_patterns():
    with dg.instance_for_test() as instance:
        skipped = _evaluate(instance)
        assert skipped.run_requests == [] or skipped.run_requests is None
        assert "no pattern" in (skipped.skip_message or "")
        add_pattern_partitions(instance, ["solo"])
        (request,) = _evaluate(instance).run_requests
    assert request.tags[PATTERN_TAG] == "solo"


def test_a_history_of_100_patterns_by_90_days_is_nine_range_runs_in_window_order():
    keys = [f"p{i:03d}" for i in range(100)]
    requests = range_run_requests(keys, date(2026, 1, 1), date(2026, 3, 31), run_key_prefix="history")
    assert len(requests) == 9  # 10 windows x 100 patterns each; one run per partition would be 9,000
    assert requests[0].tags[ASSET_PARTITION_RANGE_START_TAG] == "p000|2026-01-01"
    assert requests[0].tags[ASSET_PARTITION_RANGE_END_TAG] == "p099|2026-01-10"
    assert requests[-1].tags[ASSET_PARTITION_RANGE_END_TAG] == "p099|2026-03-31"
    # one block: the same batch tag, which the run queue lets through one run at a time
    assert {r.tags[BATCH_TAG] for r in requests} == {"p000..p099"}
    assert len({r.run_key for r in requests}) == 9


@pytest.mark.slow
def test_the_schedules_range_run_materialises_every_pattern_of_the_window(migrated_url, engine):
    patterns = ["sched-a", "sched-b", "sched-c"]
    insert_executions(engine, [execution(day=WINDOW, minute=m, pattern_id=p) for p in patterns for m in range(5)])
    # Rows of the day before must not be touched by the run for WINDOW.
    insert_executions(engine, [execution(day=WINDOW - timedelta(days=1), minute=1, pattern_id="sched-a")])
    keys = register_pattern_ids(engine, patterns)
    local = build_definitions(FeedbackDatabases(database_url=migrated_url))
    with dg.instance_for_test() as instance:
        add_pattern_partitions(instance, [keys[p] for p in patterns])
        (request,) = _evaluate(instance).run_requests
        result = local.resolve_job_def("feedback_loop_job").execute_in_process(instance=instance, tags=request.tags)
        assert result.success
        done = {
            (e.asset_key.to_user_string(), e.partition) for e in result.get_asset_materialization_events()
        }
        assert instance.get_dynamic_partitions(patterns_partitions.name) == [keys[p] for p in patterns]
    expected = {f"{keys[p]}|{WINDOW}" for p in patterns}
    assert {p for a, p in done if a == "feedback_dataset"} == expected
    assert {a for a, _ in done} == {k.to_user_string() for k in local.get_repository_def().asset_graph.materializable_asset_keys}
