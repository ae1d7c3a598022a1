"""Loop health (the original design's Monitoring section), per pattern and over all patterns, as of
the end of a window, read from what the loop stored: experiments, decisions and A/B results.

Definitions, as of the end of window W (events count from the window they were decided in):

- promotions: A/B experiments whose candidate was promoted (by the policy, or approved in review);
  each starts a *watch* of the new version against the one it replaced.
- confirmed / rolled back / under watch: promotions whose watch confirmed them, rolled them back
  (by the loop or by hand), or is still running, by W.
- improvement accuracy = confirmed / promotions (target > 90%); false-positive rate = rolled
  back / promotions (target < 5%). The rest of the promotions are under watch, so accuracy,
  false-positive rate and the share under watch add up to 1.
- mean effect of promotions: the lead metric's effect at the promotion (treatment minus control,
  in the metric's unit: points for rates and scores, % change of the geometric mean for latency,
  retries per execution), averaged per metric; `mean_performance_delta` is the seed contract's
  relative improvement (positive = better), averaged over all promotions.
- days between improvements: the mean gap between consecutive promotions (of the pattern; over
  all patterns, of the whole loop); days since the last one.
- rejection rate = rejected / A/B experiments that ended with a verdict (promoted, rejected or
  inconclusive); experiments stopped by hand are counted apart.
- running: A/B experiments started by W (their first window at most the next one) and not ended
  by W; inconclusive: A/B experiments that reached their planned sample or maximum duration
  without a decision; pending review: decisions of W or earlier still waiting for a reviewer
  (the registry does not record when a review happened, so this one is as stored now).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from statistics import fmean
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.stats.metrics import METRICS
from feedback_loop_dagster.lib.stats.units import effect_in_unit, format_in_unit, unit_of
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.vocabulary import DecisionAction, DecisionStatus, ExperimentKind

ACCURACY_TARGET = 0.90
FALSE_POSITIVE_TARGET = 0.05


@dataclass(frozen=True)
class ExperimentRow:
    id: int
    pattern_id: str
    kind: str
    control_version_id: int
    treatment_version_id: int
    start_window: date
    status: str
    outcome: str | None
    concluded_window: date | None

    def started_by(self, window: date) -> bool:
        """Started by the end of `window`: the loop starts an experiment on the window after the
        one that decided it, so one whose first window is the next has been started."""
        return self.start_window <= window + timedelta(days=1)

    def ended_by(self, window: date) -> bool:
        return self.concluded_window is not None and self.concluded_window <= window

    def open_at(self, window: date) -> bool:
        return self.started_by(window) and not self.ended_by(window)


@dataclass(frozen=True)
class Promotion:
    """A promoted A/B experiment, the watch that followed it, and its effect at the promotion."""

    experiment: ExperimentRow
    watch: ExperimentRow | None
    lead_metric: str | None
    effect: float | None  # lead metric's effect in its unit
    performance_delta: float | None

    @property
    def window(self) -> date:
        return self.experiment.concluded_window


@dataclass(frozen=True)
class HealthHistory:
    """Everything loop health needs, loaded once for a set of patterns (`load_history`)."""

    experiments: list[ExperimentRow]
    promotions: list[Promotion]
    pending_review: list[tuple[str, int, date]]  # (pattern_id, experiment_id, decision window)
    first_window: dict[str, date]  # each pattern's first collected window (or first experiment)
    _by_pattern: dict[str, HealthHistory] = field(default_factory=dict, compare=False, repr=False)

    @property
    def pattern_ids(self) -> list[str]:
        return sorted(self.first_window)

    def of(self, pattern_id: str) -> HealthHistory:
        """This history restricted to one pattern (kept: a run asks for each pattern many times)."""
        if pattern_id not in self._by_pattern:
            self._by_pattern[pattern_id] = HealthHistory(
                [e for e in self.experiments if e.pattern_id == pattern_id],
                [p for p in self.promotions if p.experiment.pattern_id == pattern_id],
                [r for r in self.pending_review if r[0] == pattern_id],
                {p: w for p, w in self.first_window.items() if p == pattern_id},
            )
        return self._by_pattern[pattern_id]


@dataclass
class Health:
    """Loop health of one pattern (or of all patterns: `pattern_id` None) as of `as_of`."""

    pattern_id: str | None
    as_of: date
    promotions: int = 0
    confirmed: int = 0
    rolled_back: int = 0
    under_watch: int = 0
    improvement_accuracy: float | None = None
    false_positive_rate: float | None = None
    mean_effect: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> {value, unit, n}
    mean_performance_delta: float | None = None
    days_between_improvements: float | None = None
    days_since_last_improvement: int | None = None
    ab_ended: int = 0  # with a verdict: promoted + rejected + inconclusive
    rejected: int = 0
    inconclusive: int = 0
    stopped: int = 0
    rejection_rate: float | None = None
    mean_days_to_decision: float | None = None
    running: int = 0
    pending_review: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["as_of"] = self.as_of.isoformat()
        return data


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def load_history(conn: Connection, pattern_ids: Iterable[str] | None = None) -> HealthHistory:
    """Experiments, promotions (with their watch and effect) and pending reviews of the patterns
    (default: every pattern with collected windows or experiments); a few set-based queries."""
    x, d, ab, fp = tables.experiments, tables.decisions, tables.ab_results, tables.feedback_partitions
    wanted = None if pattern_ids is None else sorted(set(pattern_ids))

    def only(query, column):
        return query if wanted is None else query.where(column.in_(wanted))

    experiments = [
        ExperimentRow(**row)
        for row in conn.execute(
            only(sa.select(x.c.id, x.c.pattern_id, x.c.kind, x.c.control_version_id, x.c.treatment_version_id,
                           x.c.start_window, x.c.status, x.c.outcome, x.c.concluded_window), x.c.pattern_id)
            .order_by(x.c.id)
        ).mappings()
    ]
    # The look each promotion was decided on: its lead metric's effect.
    looks = {
        experiment_id: result
        for experiment_id, result in conn.execute(
            only(
                sa.select(ab.c.experiment_id, ab.c.result)
                .select_from(ab.join(d, sa.and_(d.c.experiment_id == ab.c.experiment_id, d.c.window_start == ab.c.window_start)))
                .where(d.c.action == DecisionAction.APPLY, d.c.status == DecisionStatus.DONE),
                d.c.pattern_id,
            )
        )
    }
    watches = [e for e in experiments if e.kind == ExperimentKind.WATCH]
    promotions = []
    for experiment in experiments:
        if experiment.kind != ExperimentKind.AB or experiment.outcome != "promoted" or experiment.concluded_window is None:
            continue
        # promote() starts the watch with the same two versions, right after the promotion
        watch = next((w for w in watches if w.id > experiment.id and w.pattern_id == experiment.pattern_id
                      and w.control_version_id == experiment.control_version_id
                      and w.treatment_version_id == experiment.treatment_version_id), None)
        look = looks.get(experiment.id) or {}
        lead = look.get("lead_metric")
        effect = effect_in_unit(look["metrics"][lead]).value if lead and lead in look.get("metrics", {}) else None
        promotions.append(Promotion(experiment, watch, lead, effect, look.get("performance_delta")))
    pending = [
        (p, e, w)
        for p, e, w in conn.execute(
            only(sa.select(d.c.pattern_id, d.c.experiment_id, d.c.window_start).where(d.c.status == DecisionStatus.PENDING_REVIEW),
                 d.c.pattern_id)
        )
    ]
    first_window = dict(conn.execute(only(sa.select(fp.c.pattern_id, sa.func.min(fp.c.window_start)).group_by(fp.c.pattern_id),
                                          fp.c.pattern_id)).all())
    for e in experiments:
        first_window[e.pattern_id] = min(first_window.get(e.pattern_id, e.start_window), e.start_window - timedelta(days=1))
    if wanted is not None:
        first_window = {p: w for p, w in first_window.items() if p in wanted}
    return HealthHistory(experiments, promotions, pending, first_window)


def _mean_gap(days: Sequence[date]) -> float | None:
    ordered = sorted(days)
    return fmean((b - a).days for a, b in zip(ordered, ordered[1:])) if len(ordered) > 1 else None


def health_as_of(history: HealthHistory, as_of: date, pattern_id: str | None = None) -> Health:
    """The health of `pattern_id` (None: all patterns) from what was decided by the end of `as_of`."""
    if pattern_id is not None:
        history = history.of(pattern_id)
    health = Health(pattern_id=pattern_id, as_of=as_of)
    promotions = [p for p in history.promotions if p.window <= as_of]
    health.promotions = len(promotions)
    for promotion in promotions:
        watch = promotion.watch
        if watch is not None and watch.ended_by(as_of) and watch.outcome == "confirmed":
            health.confirmed += 1
        elif watch is not None and watch.ended_by(as_of) and watch.outcome == "rolled_back":
            health.rolled_back += 1
        elif watch is not None and not watch.ended_by(as_of):
            health.under_watch += 1
    health.improvement_accuracy = _ratio(health.confirmed, health.promotions)
    health.false_positive_rate = _ratio(health.rolled_back, health.promotions)
    effects: dict[str, list[float]] = defaultdict(list)
    for promotion in promotions:
        if promotion.lead_metric is not None and promotion.effect is not None and math.isfinite(promotion.effect):
            effects[promotion.lead_metric].append(promotion.effect)
    health.mean_effect = {metric: {"value": fmean(values), "unit": unit_of(metric), "n": len(values)}
                          for metric, values in sorted(effects.items())}
    deltas = [p.performance_delta for p in promotions if p.performance_delta is not None and math.isfinite(p.performance_delta)]
    health.mean_performance_delta = fmean(deltas) if deltas else None
    health.days_between_improvements = _mean_gap([p.window for p in promotions])
    health.days_since_last_improvement = (as_of - max(p.window for p in promotions)).days if promotions else None

    ab_tests = [e for e in history.experiments if e.kind == ExperimentKind.AB]
    ended = [e for e in ab_tests if e.ended_by(as_of)]
    verdicts = [e for e in ended if e.outcome in ("promoted", "rejected", "inconclusive")]
    health.ab_ended = len(verdicts)
    health.rejected = sum(e.outcome == "rejected" for e in verdicts)
    health.inconclusive = sum(e.outcome == "inconclusive" for e in verdicts)
    health.stopped = sum(e.outcome == "stopped" for e in ended)
    health.rejection_rate = _ratio(health.rejected, health.ab_ended)
    health.mean_days_to_decision = (
        fmean((e.concluded_window - e.start_window).days + 1 for e in verdicts) if verdicts else None
    )
    health.running = sum(e.open_at(as_of) for e in ab_tests)
    still_open = {e.id for e in history.experiments if not e.ended_by(as_of)}
    health.pending_review = sum(1 for _, e, w in history.pending_review if w <= as_of and e in still_open)
    return health


def health_over_time(history: HealthHistory, last: date, pattern_id: str | None = None) -> list[Health]:
    """Health as of each window from the pattern's (or the loop's) first window to `last`."""
    scope = history if pattern_id is None else history.of(pattern_id)
    first = min(min(scope.first_window.values(), default=last), last)
    return [health_as_of(history, first + timedelta(days=i), pattern_id) for i in range((last - first).days + 1)]


def health_report(history: HealthHistory, as_of: date) -> tuple[list[Health], Health]:
    """(each pattern's health, the loop's over all of them) as of `as_of`."""
    patterns = [health_as_of(history, as_of, p) for p in history.pattern_ids if history.first_window[p] <= as_of]
    return patterns, health_as_of(history, as_of)


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%} ({part}/{whole})" if whole else "-"


def mean_effect_text(health: Health) -> str:
    """`success rate +8.3 pts (3)`: each lead metric's mean effect at promotion, in its unit."""
    return "; ".join(
        f"{METRICS[metric].label} {format_in_unit(metric, figures['value'])} ({figures['n']})"
        for metric, figures in health.mean_effect.items()
    ) or "-"


def health_row(health: Health) -> dict[str, str]:
    """One line of a health table as a person reads it (the CLI and the UI show the same)."""
    def days(value: float | int | None) -> str:
        return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)

    return {  # the targets' figures first: a table cut at the screen's edge keeps them
        "pattern": health.pattern_id if health.pattern_id is not None else "(all patterns)",
        "accuracy": _share(health.confirmed, health.promotions),
        "false_positives": _share(health.rolled_back, health.promotions),
        "rejection_rate": _share(health.rejected, health.ab_ended),
        "running": str(health.running),
        "inconclusive": str(health.inconclusive),
        "pending_review": str(health.pending_review),
        "promoted": str(health.promotions),
        "under_watch": str(health.under_watch),
        "mean_effect": mean_effect_text(health),
        "days_between": days(health.days_between_improvements),
        "days_since": days(health.days_since_last_improvement),
    }
