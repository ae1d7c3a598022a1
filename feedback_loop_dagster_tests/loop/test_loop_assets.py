"""The whole graph through Dagster: every asset materialises, a range run
matches partition-by-partition runs, and re-materialising changes nothing (idempotency)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.clock import clock_run_config
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions, materialize_windows
from feedback_loop_dagster.lib.experiment.assignment import assign_variant
from feedback_loop_dagster.lib.registry.policies import set_policy
from feedback_loop_dagster.lib.registry.versions import register_version
from feedback_loop_dagster.lib.stats import get_preset
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster_tests.factories import insert_executions
from feedback_loop_dagster_tests.loop.traffic import PATTERN, START, traffic

LOOP_ASSETS = ["feedback_dataset", "pattern_analysis", "improvement_proposals", "experiments",
               "ab_test_results", "applied_improvements"]
VOLATILE = {"created_at", "updated_at", "collected_at", "computed_at", "applied_at", "run_id"}


def at(day: date) -> dict:
    """Run config for a run at the simulated midnight that starts `day` (UTC): the clock the
    loop starts experiments and watches by (without it, the real clock)."""
    return clock_run_config(datetime.combine(day, datetime.min.time(), UTC))


def by_window(result, asset: str) -> dict[date, dict]:
    """Each window's materialisation metadata of the asset, in a run over one pattern."""
    return {
        date.fromisoformat(m.partition.split("|")[1]): m.metadata for m in result.asset_materializations_for_node(asset)
    }


def snapshot(engine) -> dict:
    state = {}
    with engine.connect() as conn:
        for table in tables.warehouse_metadata.sorted_tables:
            if table.name == "feedback_loop_migrations":
                continue
            columns = [c for c in table.columns if c.name not in VOLATILE]
            state[table.name] = sorted(map(repr, conn.execute(sa.select(*columns)).all()))
    return state


@pytest.fixture
def loop(engine, migrated_url):
    register_pattern_ids(engine, [PATTERN])
    with engine.begin() as conn:
        register_version(conn, PATTERN, "v1", {"timeout_ms": 2000})
        set_policy(conn, PATTERN, get_preset("production", feedback_type="reliability", time_window_days=2))
    for d in range(3):
        insert_executions(engine, traffic(START + timedelta(days=d), 200, 0.85, timeout_rate=0.10, seed=d))
    defs = build_definitions(FeedbackDatabases(database_url=migrated_url))
    with dg.instance_for_test() as instance:
        add_pattern_partitions(instance, [PATTERN])
        yield defs, instance


def test_every_asset_materialises_and_rematerialising_changes_nothing(loop, engine):
    defs, instance = loop
    # The three days' executions all exist, so the run is at (after) the midnight ending the last.
    end = START + timedelta(days=3)
    (result,) = materialize_windows(defs, instance, [PATTERN], START, START + timedelta(days=2), run_config=at(end))
    assert result.success
    for asset in LOOP_ASSETS:
        assert len(result.asset_materializations_for_node(asset)) == 3, asset
    proposals = by_window(result, "improvement_proposals")
    # Proposed once, on the first window, and seen again on the next ones.
    assert [proposals[START + timedelta(days=d)]["new_proposals"].value for d in range(3)] == [1, 0, 0]
    started = by_window(result, "experiments")
    assert [started[START + timedelta(days=d)]["started"].value for d in range(3)] == [1, 0, 0]
    with engine.connect() as conn:
        experiment = conn.execute(sa.select(tables.experiments)).mappings().one()
    # Proposed on the first window, whose next window is complete by then: it starts in the open one.
    assert experiment["start_window"] == end

    before = snapshot(engine)
    for day in range(3):  # re-materialised later, on the real clock
        materialize_windows(defs, instance, [PATTERN], START + timedelta(days=day), START + timedelta(days=day))
    assert snapshot(engine) == before
    materialize_windows(defs, instance, [PATTERN], START, START + timedelta(days=2))
    assert snapshot(engine) == before


def test_a_backfill_over_past_windows_starts_the_experiment_today(loop, engine):
    """On the real clock, a proposal made on an old window starts no experiment in the past."""
    defs, instance = loop
    today = datetime.now(UTC).date()
    (result,) = materialize_windows(defs, instance, [PATTERN], START, START + timedelta(days=2))
    with engine.connect() as conn:
        experiment = conn.execute(sa.select(tables.experiments)).mappings().one()
    assert today <= experiment["start_window"] <= datetime.now(UTC).date()
    # No look at the backfilled windows: the experiment has no evidence in them.
    assert all(
        m.metadata["experiments_evaluated"].value == 0 for m in result.asset_materializations_for_node("ab_test_results")
    )
    checks = [
        e.event_specific_data for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == "sample_ratio_mismatch"
    ]
    assert all(c.passed for c in checks)


def test_ab_results_show_a_table_a_plot_and_a_passing_srm_check(loop, engine):
    defs, instance = loop
    # Run at the midnight that closes START (the clock follows the simulated day):
    # starts an experiment from day 1, the next window.
    materialize_windows(defs, instance, [PATTERN], START, START, run_config=at(START + timedelta(days=1)))
    with engine.connect() as conn:
        assert conn.scalar(sa.select(tables.experiments.c.start_window)) == START + timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(tables.hook_executions.delete().where(tables.hook_executions.c.started_at >= START + timedelta(days=1)))
    for day in (1, 2):
        rows = traffic(START + timedelta(days=day), 300, 0.85, timeout_rate=0.10, seed=10 + day)
        for row in rows:  # callers route with assign_variant, as the README documents
            row["pattern_version"] = assign_variant(PATTERN, row["unit_id"] + row["execution_id"], engine)
        insert_executions(engine, rows)
    (result,) = materialize_windows(
        defs, instance, [PATTERN], START + timedelta(days=1), START + timedelta(days=2), run_config=at(START + timedelta(days=3))
    )
    metadata = result.asset_materializations_for_node("ab_test_results")[-1].metadata
    assert metadata["experiments_evaluated"].value == 1
    assert "data:image/png;base64," in metadata["lift_over_time"].value
    assert {"metric", "improvement", "p_value", "guardrail"} <= {c.name for c in metadata["metrics"].schema.columns}
    checks = [
        e.event_specific_data for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == "sample_ratio_mismatch"
    ]
    assert checks and all(c.passed for c in checks)
