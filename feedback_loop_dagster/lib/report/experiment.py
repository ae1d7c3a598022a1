"""One experiment as a person reads it: the verdict, each metric's effect and interval in its unit,
then p and n; the guardrails with their margins; what the candidate changed (its JSON merge patch
on the control's config); how the verdict went look by look; the decision; and the Dagster
partition that shows it.

The read model of `feedback-loop experiments show ID`, and the texts the `ab_test_results` asset
puts on each partition (defs/validate/assets.py), so the UI and the CLI say the same thing. It only
reads what the loop stored (experiments, ab_results, decisions, pattern_versions); every effect is
written by lib/stats/units.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.experiment.experiments import Experiment, get_experiment
from feedback_loop_dagster.lib.registry.patch import diff_patch
from feedback_loop_dagster.lib.registry.versions import get_version
from feedback_loop_dagster.lib.safe_partition_key import safe_partition_key
from feedback_loop_dagster.lib.stats.units import format_effect, format_in_unit, format_margin, to_unit, verdict_of
from feedback_loop_dagster.lib.storage import tables

#: the Dagster asset whose partitions show each look (its verdict, effects, lift plot and patch)
RESULTS_ASSET = "ab_test_results"
#: decisions that move the `active` label from one version to the other
MOVES_ACTIVE = ("apply", "rollback")


@dataclass(frozen=True)
class MetricLine:
    """One metric of a look: ``effect`` is ``-12.6 pts [-19.6, -5.6], worse`` (units.format_effect)."""

    metric: str
    role: str
    effect: str
    p: str
    n: str
    guardrail: str | None


@dataclass(frozen=True)
class HistoryEvent:
    window: date | None
    event: str
    detail: str


@dataclass(frozen=True)
class ExperimentReport:
    id: int
    pattern_id: str
    title: str
    status: str
    outcome: str | None
    traffic_split: float
    start_window: date
    last_look: date | None
    verdict: str | None
    headline: str
    patch: dict[str, Any]
    metrics: list[MetricLine]
    history: list[HistoryEvent]
    partition: str | None
    partition_path: str | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("start_window", "last_look"):
            data[key] = data[key].isoformat() if data[key] else None
        for event in data["history"]:
            event["window"] = event["window"].isoformat() if event["window"] else None
        return data


def p_text(p: Any) -> str:
    return "-" if p is None else f"{float(p):.2g}"


def n_text(result: dict[str, Any]) -> str:
    """Executions per arm, control/treatment."""
    return f"{result.get('n_control', 0)}/{result.get('n_treatment', 0)}"


def experiment_title(experiment: Experiment) -> str:
    """``#8 watch v2 vs v1``."""
    return f"#{experiment.id} {experiment.kind} {experiment.treatment.version} vs {experiment.control.version}"


def candidate_patch(experiment: Experiment) -> dict[str, Any]:
    """What the treatment changes in the control's config, as a JSON merge patch (RFC 7386)."""
    return diff_patch(experiment.control.config, experiment.treatment.config)


def patch_text(patch: dict[str, Any]) -> str:
    # display text, not a stored document
    return json.dumps(patch, sort_keys=True, ensure_ascii=False) if patch else "{} (same config)"


def lead_effect(result: dict[str, Any]) -> str | None:
    """The lead metric's effect in its unit with its interval and verdict word, labelled."""
    lead = (result.get("metrics") or {}).get(result.get("lead_metric"))
    return format_effect(lead, label=True, verdict=verdict_of(lead)) if lead else None


def headline(experiment: Experiment, result: dict[str, Any] | None, title: str | None = None) -> str:
    """``#8 watch v2 vs v1: reject; success rate -12.6 pts [-19.6, -5.6], worse; p=1.2e-08; n=403/1589``:
    the verdict, the lead effect and its interval in the metric's unit, then p and n. `title`
    replaces ``#8 watch v2 vs v1`` (the UI's is markdown)."""
    title = experiment_title(experiment) if title is None else title
    if result is None:
        return f"{title}: no look yet"
    effect = lead_effect(result) or "no data"
    return f"{title}: {result.get('recommendation')}; {effect}; p={p_text(result.get('p_value'))}; n={n_text(result)}"


def guardrail_text(metric: dict[str, Any]) -> str | None:
    """``ok: bound -2.6 pts, margin -5.0 pts``: the guardrail's status, its always-valid bound on
    the harmful side and the harm its margin allows, in the metric's unit."""
    status = metric.get("guardrail_status")
    if status is None:
        return None
    name = metric["metric"]
    bound = metric.get("ni_bound")
    bound_text = format_in_unit(name, to_unit(name, bound)) if bound is not None else "unbounded"
    margin = metric.get("margin")
    margin_text = format_margin(name, margin) if margin is not None else "-"
    return f"{status}: bound {bound_text}, margin {margin_text}"


def metric_lines(result: dict[str, Any]) -> list[MetricLine]:
    """Every metric of a stored look, primaries first."""
    metrics = list((result.get("metrics") or {}).values())
    metrics.sort(key=lambda m: m.get("role") != "primary")
    return [
        MetricLine(
            metric=m["metric"],
            role=m.get("role") or "-",
            effect=format_effect(m, label=True, verdict=verdict_of(m)),
            p=p_text(m.get("adjusted_p_value", m.get("p_value"))),
            n=n_text(m),
            guardrail=guardrail_text(m),
        )
        for m in metrics
    ]


def partition_of(pattern_id: str, window: date) -> tuple[str, str]:
    """The Dagster partition key of (pattern, window) and the UI path of its A/B results."""
    key = f"{safe_partition_key(pattern_id)}|{window.isoformat()}"
    return key, f"/assets/{RESULTS_ASSET}?view=partitions&partition={quote(key, safe='')}"


def _history(conn: Connection, experiment: Experiment, looks: list[tuple[date, dict[str, Any]]]) -> list[HistoryEvent]:
    events = [HistoryEvent(experiment.start_window, "started",
                           f"{experiment.traffic_split:.0%} of traffic to {experiment.treatment.version}")]
    previous = None
    for window, result in looks:
        verdict = result.get("recommendation")
        if verdict != previous:
            events.append(HistoryEvent(window, f"look: {verdict}", lead_effect(result) or result.get("reason", "")))
            previous = verdict
    d = tables.decisions
    decided = set()
    for row in conn.execute(sa.select(d).where(d.c.experiment_id == experiment.id).order_by(d.c.id)).mappings():
        moved = ""
        if row["action"] in MOVES_ACTIVE and row["from_version_id"] and row["to_version_id"]:
            moved = (f" ({get_version(conn, row['from_version_id']).version} -> "
                     f"{get_version(conn, row['to_version_id']).version})")
        events.append(HistoryEvent(row["window_start"], f"decision #{row['id']}: {row['action']}{moved}, {row['status']}",
                                   f"{row['reason']} (by {row['decided_by']})"))
        decided.add(row["reason"])
    if experiment.status != "running":
        # a decision that concluded the experiment gave it its reason: not said twice
        events.append(HistoryEvent(experiment.concluded_window, f"{experiment.status}: {experiment.outcome or '-'}",
                                   "the decision's reason" if experiment.reason in decided else experiment.reason or ""))
    return events


def experiment_report(conn: Connection, experiment_id: int) -> ExperimentReport:
    """Everything `experiments show` prints; NotFound for an unknown id."""
    experiment = get_experiment(conn, experiment_id)
    ab = tables.ab_results
    looks = conn.execute(
        sa.select(ab.c.window_start, ab.c.result).where(ab.c.experiment_id == experiment_id).order_by(ab.c.window_start)).all()
    last_window, last = looks[-1] if looks else (None, None)
    partition, path = partition_of(experiment.pattern_id, last_window) if last_window else (None, None)
    return ExperimentReport(
        id=experiment.id,
        pattern_id=experiment.pattern_id,
        title=experiment_title(experiment),
        status=experiment.status,
        outcome=experiment.outcome,
        traffic_split=experiment.traffic_split,
        start_window=experiment.start_window,
        last_look=last_window,
        verdict=last.get("recommendation") if last else None,
        headline=headline(experiment, last),
        patch=candidate_patch(experiment),
        metrics=metric_lines(last) if last else [],
        history=_history(conn, experiment, looks),
        partition=partition,
        partition_path=path,
    )
