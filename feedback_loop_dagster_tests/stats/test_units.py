"""Effects in the metric's own unit: one sign convention, one interval order, from results or JSON."""

from __future__ import annotations

import json
import math

import pytest

from feedback_loop_dagster.lib.stats import LogMeanStats, MeanStats, Policy, ProportionStats, evaluate_metric
from feedback_loop_dagster.lib.stats.units import (
    effect_in_unit,
    format_change,
    format_effect,
    format_in_unit,
    format_margin,
    improvement_in_unit,
    to_unit,
    unit_of,
    verdict_of,
    verdict_word,
)


def mean_stats(n, mean, sd, cls=MeanStats):
    return cls(n, n * mean, (n - 1) * sd * sd + n * mean * mean)


SEQ = Policy()


def test_success_drop_is_negative_points_with_an_ordered_interval_and_the_word_worse():
    r = evaluate_metric("success", ProportionStats(300, 270), ProportionStats(300, 240), SEQ)
    value, low, high, unit = effect_in_unit(r)
    assert unit == "pts" and value == pytest.approx(-10.0)
    assert low == pytest.approx(r.ci_lower * 100) and high == pytest.approx(r.ci_upper * 100) and low <= high
    assert verdict_of(r) == "worse"
    text = format_effect(r, label=True, verdict=verdict_of(r))
    assert text == f"success rate -10.0 pts [{low:+.1f}, {high:+.1f}], worse"


def test_latency_is_the_relative_change_of_the_geometric_mean_negative_faster():
    c = mean_stats(1000, math.log(850.0), 0.5, LogMeanStats)
    t = mean_stats(1000, math.log(748.0), 0.5, LogMeanStats)
    r = evaluate_metric("latency", c, t, SEQ)
    value, low, high, unit = effect_in_unit(r)
    assert unit == "%" and value == pytest.approx((748 / 850 - 1) * 100)
    assert low == pytest.approx(math.expm1(r.ci_lower) * 100) and high == pytest.approx(math.expm1(r.ci_upper) * 100)
    assert low < value < high < 0
    assert verdict_of(r) == "better" and verdict_word("latency", value) == "better"
    assert format_effect(r) == f"-12.0% [{low:+.1f}%, {high:+.1f}%] (850 -> 748 ms)"


def test_retries_are_retries_per_execution_and_more_is_worse():
    r = evaluate_metric("retries", mean_stats(2000, 0.20, 0.5), mean_stats(2000, 0.32, 0.5), SEQ)
    value, low, high, unit = effect_in_unit(r)
    assert unit == "retries/exec" and value == pytest.approx(0.12)
    assert format_effect(r).startswith("+0.12 retries/exec [+0.")
    assert verdict_word("retries", value) == "worse" and verdict_of(r) == "worse"


@pytest.mark.parametrize("metric", ["quality", "rating"])
def test_scores_on_a_zero_one_scale_are_points(metric):
    r = evaluate_metric(metric, mean_stats(500, 0.70, 0.15), mean_stats(500, 0.73, 0.15), SEQ)
    assert effect_in_unit(r).unit == "pts"
    assert format_effect(r).startswith("+3.0 pts [")
    assert verdict_word(metric, 3.0) == "better"


def test_stored_json_gives_the_same_text_as_the_result():
    r = evaluate_metric("success", ProportionStats(400, 360), ProportionStats(420, 390), SEQ)
    stored = json.loads(json.dumps(r.to_dict()))
    assert effect_in_unit(stored) == effect_in_unit(r)
    assert format_effect(stored, label=True) == format_effect(r, label=True)


def test_unbounded_intervals_and_missing_data():
    # an arm with one observation: no variance estimate, the interval is unbounded (None in JSON)
    r = evaluate_metric("quality", mean_stats(1, 0.7, 0.0), mean_stats(50, 0.7, 0.1), SEQ)
    assert effect_in_unit(r)[1:3] == (-math.inf, math.inf)
    assert "[-inf, +inf]" in format_effect(json.loads(json.dumps(r.to_dict())))
    empty = evaluate_metric("quality", MeanStats(), MeanStats(), SEQ)
    assert effect_in_unit(empty) == (None, None, None, "pts")
    assert format_effect(empty, label=True) == "quality score: no data"


def test_margins_are_written_as_the_harm_they_allow():
    assert format_margin("success", 0.05) == "-5.0 pts"
    assert format_margin("quality", 0.05) == "-5.0 pts"
    assert format_margin("latency", 0.05) == "+5.0%"
    assert format_margin("retries", 0.5) == "+0.50 retries/exec"


def test_helpers():
    assert to_unit("latency", math.log(1.1)) == pytest.approx(10.0)
    assert to_unit("success", -0.05) == pytest.approx(-5.0)
    assert to_unit("latency", -math.inf) == -100.0
    assert format_in_unit("success", -0.04) == "0.0 pts"  # no "-0.0"
    assert verdict_word("success", 0.0) == "unchanged"
    with pytest.raises(ValueError, match="unknown metric 'speed'"):
        unit_of("speed")


def test_an_expected_improvement_is_written_as_the_effect_the_ab_test_will_report():
    """Proposals hold changes on the improvement scale (positive = better); people read them as
    treatment - control in the metric's unit, interval [low, high]."""
    assert format_change("success", *(improvement_in_unit("success", x) for x in (0.05, 0.02, 0.08))) == "+5.0 pts [+2.0, +8.0]"
    # 12% faster (6-18%): a latency change of -12%, its interval ordered low to high
    assert format_change("latency", *(improvement_in_unit("latency", x) for x in (0.12, 0.06, 0.18))) == "-12.0% [-18.0%, -6.0%]"
    assert improvement_in_unit("retries", 0.1) == pytest.approx(-0.1) and improvement_in_unit("quality", None) is None


def test_an_estimate_outside_the_narrowed_interval_is_marked_as_this_looks():
    first = evaluate_metric("success", ProportionStats(2000, 1000), ProportionStats(2000, 1300), SEQ)
    assert "earlier looks" not in format_effect(first)
    second = evaluate_metric("success", ProportionStats(4000, 2000), ProportionStats(4000, 2350), SEQ,
                             previous={"success": first.state()})
    value, low, high, _unit = effect_in_unit(second)
    assert value < low  # the running intersection kept the first look's lower bound
    assert format_effect(second) == (
        f"+8.8 pts [{low:+.1f}, {high:+.1f}] (this look's estimate; the interval is narrowed by earlier looks)"
    )
