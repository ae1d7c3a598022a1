"""Loop health from a constructed history whose figures are known: every
change written by the loop's own functions (start, promote, watch, roll back, reject, review,
stop), the effects of the promotions stored as the A/B engine stores them."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta

import pytest

from feedback_loop_dagster.lib.apply.decisions import promote, queue_for_review, reject, rollback
from feedback_loop_dagster.lib.experiment.experiments import (
    conclude_experiment,
    running_experiment,
    start_experiment,
    stop_experiment,
)
from feedback_loop_dagster.lib.report.health import health_as_of, health_over_time, health_report, health_row, load_history
from feedback_loop_dagster.lib.stats import get_preset
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster_tests.loop.builders import registered_versions, stored_look
from feedback_loop_dagster_tests.svg_pictures import svg_pictures, texts

W = [date(2026, 3, 1) + timedelta(days=i) for i in range(40)]
POLICY = get_preset("development")


def _midnight_after(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)


@pytest.fixture
def history(engine):
    """Pattern a: promoted (W2, +5.0 pts) and confirmed (W9); promoted (W12, latency -10.0%) and
    rolled back (W15); rejected (W17); inconclusive (W25); running from W26 with a review pending
    since W27. Pattern b: promoted (W5, +3.0 pts), still under watch. Pattern c: stopped by hand."""
    with engine.begin() as conn:
        v1, v2, v3, v4, v5, v6 = registered_versions(conn, "a", 6)
        first = start_experiment(conn, "a", v1, v2, POLICY, W[0])
        promote(conn, first, W[2], stored_look(conn, first, W[2], "success", 0.05, 0.06), "policy", now=_midnight_after(W[2]))
        conclude_experiment(conn, running_experiment(conn, "a").id, W[9], "confirmed", "no regression")
        second = start_experiment(conn, "a", v2, v3, POLICY, W[10])
        promote(conn, second, W[12], stored_look(conn, second, W[12], "latency", math.log(0.9), 0.10), "policy",
                now=_midnight_after(W[12]))
        rollback(conn, running_experiment(conn, "a"), W[15], {"reason": "harm", "recommendation": "reject"}, "policy")
        reject(conn, start_experiment(conn, "a", v2, v4, POLICY, W[16]), W[17], {"reason": "worse"}, "policy")
        conclude_experiment(conn, start_experiment(conn, "a", v2, v5, POLICY, W[18]).id, W[25], "inconclusive", "max duration")
        queue_for_review(conn, start_experiment(conn, "a", v2, v6, POLICY, W[26]), W[27], {"reason": "better"})

        b1, b2 = registered_versions(conn, "b", 2)
        promoted_b = start_experiment(conn, "b", b1, b2, POLICY, W[3])
        promote(conn, promoted_b, W[5], stored_look(conn, promoted_b, W[5], "success", 0.03, 0.04), "policy",
                now=_midnight_after(W[5]))

        c1, c2 = registered_versions(conn, "c", 2)
        stop_experiment(conn, start_experiment(conn, "c", c1, c2, POLICY, W[2]).id, W[4], "wrong split", user="t")
        conn.execute(tables.feedback_partitions.insert().values(
            pattern_key="c", window_start=W[0], pattern_id="c", source_rows=10, valid_rows=10, quarantined_rows=0,
            collected_at=datetime.now(UTC)))
    with engine.connect() as conn:
        return load_history(conn)


def test_the_loop_as_of_the_end(history):
    per_pattern, overall = health_report(history, W[30])
    assert [h.pattern_id for h in per_pattern] == ["a", "b", "c"]
    assert (overall.promotions, overall.confirmed, overall.rolled_back, overall.under_watch) == (3, 1, 1, 1)
    assert overall.improvement_accuracy == pytest.approx(1 / 3) and overall.false_positive_rate == pytest.approx(1 / 3)
    assert overall.mean_effect["success"] == {"value": pytest.approx(4.0), "unit": "pts", "n": 2}
    assert overall.mean_effect["latency"] == {"value": pytest.approx(-10.0), "unit": "%", "n": 1}
    assert overall.mean_performance_delta == pytest.approx((0.06 + 0.10 + 0.04) / 3)
    assert overall.days_between_improvements == pytest.approx(5.0)  # W2 -> W5 -> W12
    assert overall.days_since_last_improvement == 18
    assert (overall.ab_ended, overall.rejected, overall.inconclusive, overall.stopped) == (5, 1, 1, 1)
    assert overall.rejection_rate == pytest.approx(0.2)
    assert overall.mean_days_to_decision == pytest.approx((3 + 3 + 2 + 8 + 3) / 5)
    assert (overall.running, overall.pending_review) == (1, 1)
    row = health_row(overall)
    assert row["accuracy"] == "33% (1/3)" and row["rejection_rate"] == "20% (1/5)"
    assert row["mean_effect"] == "latency -10.0% (1); success rate +4.0 pts (2)"


def test_each_pattern_as_of_the_end(history):
    a, b, c = health_report(history, W[30])[0]
    assert (a.promotions, a.confirmed, a.rolled_back, a.under_watch) == (2, 1, 1, 0)
    assert (a.improvement_accuracy, a.false_positive_rate) == (0.5, 0.5)
    assert a.days_between_improvements == pytest.approx(10.0)
    assert (a.ab_ended, a.rejected, a.inconclusive, a.running, a.pending_review) == (4, 1, 1, 1, 1)
    assert (b.promotions, b.under_watch, b.improvement_accuracy, b.false_positive_rate) == (1, 1, 0.0, 0.0)
    assert b.days_between_improvements is None and b.mean_effect == {"success": {"value": pytest.approx(3.0), "unit": "pts", "n": 1}}
    assert (c.promotions, c.ab_ended, c.stopped, c.rejection_rate, c.running) == (0, 0, 1, None, 0)


@pytest.mark.parametrize(
    "day, figures",
    [
        # (promotions, confirmed, rolled back, under watch, rejected, inconclusive, running, pending review)
        (1, (0, 0, 0, 0, 0, 0, 2, 0)),  # a from W0 and c from W2 (started by the window before); b from W3
        (2, (1, 0, 0, 1, 0, 0, 2, 0)),  # a promoted on W2; b and c running
        (8, (2, 0, 0, 2, 0, 0, 0, 0)),  # c stopped on W4; a's second experiment not started yet
        (9, (2, 1, 0, 1, 0, 0, 1, 0)),  # a's watch confirmed on W9; its next experiment starts W10
        (15, (3, 1, 1, 1, 0, 0, 1, 0)),  # rolled back on W15; the next experiment starts W16
        (17, (3, 1, 1, 1, 1, 0, 1, 0)),  # rejected on W17; the next one starts W18
        (27, (3, 1, 1, 1, 1, 1, 1, 1)),
    ],
)
def test_as_of_each_window_only_what_was_decided_by_then(history, day, figures):
    h = health_as_of(history, W[day])
    assert (h.promotions, h.confirmed, h.rolled_back, h.under_watch, h.rejected, h.inconclusive, h.running,
            h.pending_review) == figures


def test_over_time_runs_from_the_first_window(history):
    series = health_over_time(history, W[30])
    assert series[0].as_of == W[0] - timedelta(days=1)  # the day before a's first experiment starts
    assert [h.as_of for h in series] == [W[0] - timedelta(days=1) + timedelta(days=i) for i in range(len(series))]
    assert series[-1].as_of == W[30] and series[-1].promotions == 3
    only_c = health_over_time(history, W[30], "c")
    assert only_c[0].as_of == W[0] and only_c[-1].stopped == 1


def test_one_pattern_loaded_alone_has_the_same_figures(engine, history):
    with engine.connect() as conn:
        alone = load_history(conn, ["b"])
    assert health_as_of(alone, W[30], "b") == health_as_of(history, W[30], "b")
    assert alone.pattern_ids == ["b"]


def test_the_cli_reports_the_same_figures(history, migrated_url, tmp_path):
    from click.testing import CliRunner

    from feedback_loop_dagster.cli import main

    env = {"FEEDBACK_LOOP_DATABASE_URL": migrated_url, "DAGSTER_HOME": str(tmp_path / "home")}
    shown = CliRunner().invoke(main, ["health", "--as-of", W[30].isoformat(), "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    assert report["overall"] == health_as_of(history, W[30]).to_dict()
    assert [p["pattern_id"] for p in report["patterns"]] == ["a", "b", "c"]
    plot = tmp_path / "health.svg"
    table = CliRunner().invoke(main, ["health", "a", "--as-of", W[30].isoformat(), "--plot", str(plot)], env=env)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"loop health as of {W[30]}") and lines[1].split()[:3] == ["pattern", "accuracy", "false_positives"]
    assert lines[2].split()[:4] == ["(all", "patterns)", "33%", "(1/3)"] and lines[3].split()[:3] == ["a", "50%", "(1/2)"]
    assert len(lines) == 5 and plot.read_text().startswith("<svg")
    assert texts(ET.fromstring(plot.read_text()))[0] == f"a: loop health as of {W[30]}"


def _loop_health(engine, url: str, keys: list[str], first: date, last: date) -> dict:
    """loop_health alone materialised in-process for keys x [first, last]: partition -> metadata."""
    import dagster as dg

    from feedback_loop_dagster.definitions import build_definitions
    from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
    from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions, materialize_windows
    from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids

    register_pattern_ids(engine, ["a", "b", "c"])
    defs = build_definitions(FeedbackDatabases(database_url=url))
    with dg.instance_for_test() as instance:
        add_pattern_partitions(instance, ["a", "b", "c"])
        (result,) = materialize_windows(defs, instance, keys, first, last, asset_selection=[dg.AssetKey("loop_health")])
    return {m.partition: m.metadata for m in result.asset_materializations_for_node("loop_health")}


def test_the_asset_shows_the_partitions_figures_and_the_loop(history, engine, migrated_url):
    (metadata,) = _loop_health(engine, migrated_url, ["a"], W[30], W[30]).values()
    assert metadata["pattern_id"].value == "a"
    assert (metadata["promotions"].value, metadata["rolled_back"].value, metadata["running"].value) == (2, 1, 1)
    assert metadata["improvement_accuracy"].value == 0.5 and metadata["rejection_rate"].value == 0.25
    ((_, own),), ((_, loop),) = svg_pictures(metadata["over_time"].value), svg_pictures(metadata["loop_over_time"].value)
    assert texts(own)[0] == f"a: loop health as of {W[30]}" and texts(loop)[0] == f"all patterns: loop health as of {W[30]}"
    loop = [dict(r.data) for r in metadata["loop"].records]
    assert [r["pattern"] for r in loop] == ["(all patterns)", "a", "b", "c"]
    assert [r["partition_key"] for r in loop] == ["-", "a", "b", "c"]
    assert loop[0]["accuracy"] == "33% (1/3)" and loop[0]["inconclusive"] == "1"


def test_a_range_run_gives_each_partition_its_own_figures(history, engine, migrated_url):
    events = _loop_health(engine, migrated_url, ["a", "b", "c"], W[8], W[9])
    own = {key: (m["pattern_id"].value, m["promotions"].value, m["confirmed"].value, "over_time" in m)
           for key, m in events.items()}
    assert own == {
        "a|2026-03-09": ("a", 1, 0, False), "b|2026-03-09": ("b", 1, 0, False), "c|2026-03-09": ("c", 0, 0, False),
        "a|2026-03-10": ("a", 1, 1, True), "b|2026-03-10": ("b", 1, 0, True), "c|2026-03-10": ("c", 0, 0, True),
    }
    # the loop's plot once per run, on its last window
    assert ["loop_over_time" in m for _, m in sorted(events.items())] == [False, True, False, True, False, True]
