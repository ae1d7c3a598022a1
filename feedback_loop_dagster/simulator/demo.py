"""The demo: a time-stepped simulation whose traffic follows the registry, run through Dagster.

Each simulated day, for every pattern of the scenario (`scenario.demo_patterns()`):

1. read the registry: the running experiment (its arms and split) if it has started, else the
   `active` version;
2. route each unit (session) with the same hashing as `assign_variant`
   (`in_treatment(experiment_salt(pattern, experiment), units, split)`), and draw each
   execution's outcome from the routed version's config and the pattern's truth;
3. write the day to `hook_executions`;

then materialise that window for every pattern in one range run (`materialize_windows`), so
the loop analyses, proposes, starts experiments, evaluates them and decides before the next day
is simulated. The days end yesterday (UTC) so every partition exists and is complete. Each
day's run is told the simulated time (the clock resource, at the midnight ending that day), so the
loop starts experiments on the next simulated day rather than on the real clock's open window.

    rows = run_demo(defs, instance, warehouse_engine, source_engine, days=21, seed=7, per_day=500)
    print(format_table(rows))
"""

from __future__ import annotations

import textwrap
import time as clock
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from feedback_loop_dagster.defs.code_location.clock import midnight_after
from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions, materialize_windows, quiet_run_config
from feedback_loop_dagster.lib.experiment.assignment import experiment_salt, in_treatment
from feedback_loop_dagster.lib.experiment.experiments import Experiment, list_experiments, running_experiment
from feedback_loop_dagster.lib.partition_start import record_first_window
from feedback_loop_dagster.lib.registry.policies import set_policy
from feedback_loop_dagster.lib.registry.versions import ACTIVE, get_label, get_version, register_version, set_label
from feedback_loop_dagster.lib.stats.units import format_effect
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster.lib.storage.vocabulary import ExperimentKind
from feedback_loop_dagster.lib.storage.writes import bulk_insert
from feedback_loop_dagster.simulator.scenario import PatternTruth, Routing, demo_patterns, simulate_day, window_days

DEFAULT_DAYS = 21
DEFAULT_PER_DAY = 500
DEFAULT_SEED = 7
FIRST_VERSION = "v1"

PROMOTED, REJECTED, INCONCLUSIVE, RUNNING, ROLLED_BACK, NO_EXPERIMENT = (
    "promoted", "rejected", "inconclusive", "still running", "rolled back", "no experiment",
)


@dataclass(frozen=True)
class DemoRow:
    """One line of the final table: a pattern's planted truth against what the loop decided."""

    pattern_id: str
    planted: str
    expected: str  # promoted | rejected | inconclusive | rolled back | no experiment
    actual: str  # promoted | rejected | inconclusive | still running | rolled back | no experiment
    active: str  # the active version at the end
    experiment: str  # the deciding experiment, e.g. "#3 ab v2 vs v1"
    lead_metric: str | None
    lift: str  # the lead metric's effect with its interval, in its own unit (see lift_text)
    effect: dict  # the lead metric's result at the last look (ab_results JSON)
    executions: int | None  # n_control + n_treatment of the deciding experiment's last look
    decided: date | None
    reason: str
    match: bool


def has_demo_data(warehouse: Engine, source: Engine) -> str | None:
    """Why these databases are not fresh (executions or registered versions), else None."""
    with source.connect() as conn:
        executions = conn.scalar(sa.select(sa.func.count()).select_from(tables.hook_executions))
    with warehouse.connect() as conn:
        versions = conn.scalar(sa.select(sa.func.count()).select_from(tables.pattern_versions))
    if executions or versions:
        return f"{executions} execution(s) in {tables.hook_executions.name} and {versions} registered version(s)"
    return None


def register_patterns(warehouse: Engine, instance: dg.DagsterInstance, patterns: Sequence[PatternTruth]) -> list[str]:
    """Each pattern's partition key, v1 (its config, `active`) and policy, before the first day."""
    keys = register_pattern_ids(warehouse, [p.pattern_id for p in patterns])
    with warehouse.begin() as conn:
        for truth in patterns:
            v1 = register_version(conn, truth.pattern_id, FIRST_VERSION, truth.config, created_by="demo", source="manual")
            set_label(conn, truth.pattern_id, ACTIVE, v1.id, evidence_window=None)
            set_policy(conn, truth.pattern_id, truth.policy)
    ordered = [keys[p.pattern_id] for p in patterns]
    add_pattern_partitions(instance, ordered)
    return ordered


def _promotions(conn, pattern_id: str) -> dict[str, date]:
    """Version name -> window of its (first) promotion."""
    d = tables.decisions
    rows = conn.execute(
        sa.select(d.c.to_version_id, d.c.window_start)
        .where(d.c.pattern_id == pattern_id, d.c.action == "apply", d.c.status == "done")
        .order_by(d.c.window_start)
    ).all()
    found: dict[str, date] = {}
    for version_id, window in rows:
        found.setdefault(get_version(conn, version_id).version, window)
    return found


def registry_routing(conn, truth: PatternTruth, day: date, unit_ids: np.ndarray) -> Routing:
    """What the registry says these units run on `day`: their arm of the running experiment
    (when it has started) or the active version; plus the versions degraded by then."""
    degraded: frozenset[str] = frozenset()
    if truth.degrade_after_promotion_days is not None:
        degraded = frozenset(
            name for name, promoted in _promotions(conn, truth.pattern_id).items()
            if day >= promoted + timedelta(days=truth.degrade_after_promotion_days)
        )
    experiment = running_experiment(conn, truth.pattern_id)
    if experiment is not None and experiment.start_window <= day:
        share = in_treatment(experiment_salt(truth.pattern_id, experiment.id), unit_ids, experiment.traffic_split)
        return Routing(
            control=experiment.control.version,
            control_config=experiment.control.config,
            treatment=experiment.treatment.version,
            treatment_config=experiment.treatment.config,
            in_treatment=share,
            degraded=degraded,
        )
    active = get_label(conn, truth.pattern_id, ACTIVE)
    return Routing(control=active.version, control_config=active.config, degraded=degraded)


def _events(warehouse: Engine, pattern_ids: Sequence[str], day: date) -> list[str]:
    """What the loop did in `day`'s window: decisions taken, experiments started, promotions confirmed."""
    e, d = tables.experiments, tables.decisions
    events = []
    with warehouse.connect() as conn:
        rows = conn.execute(
            sa.select(d.c.pattern_id, d.c.action, d.c.status, d.c.experiment_id, d.c.to_version_id)
            .where(d.c.window_start == day, d.c.pattern_id.in_(list(pattern_ids)))
            .order_by(d.c.id)
        ).all()
        for pattern_id, action, status, experiment_id, to_version in rows:
            verb = {"apply": "promoted", "reject": "rejected", "rollback": "rolled back to",
                    "keep": "ended inconclusive, kept the control"}.get(action, action)
            target = get_version(conn, to_version).version if to_version else ""
            if action in ("reject", "keep"):
                target = ""
            events.append(f"{pattern_id}: #{experiment_id} {verb} {target}".rstrip() + ("" if status == "done" else f" ({status})"))
        for experiment in list_experiments(conn):
            if experiment.pattern_id in pattern_ids and experiment.start_window == day + timedelta(days=1):
                what = "A/B" if experiment.kind == ExperimentKind.AB else "watch"
                events.append(
                    f"{experiment.pattern_id}: {what} #{experiment.id} {experiment.treatment.version} vs "
                    f"{experiment.control.version} from tomorrow ({experiment.traffic_split:.0%} treatment)"
                )
        confirmed = conn.execute(
            sa.select(e.c.pattern_id, e.c.id).where(
                e.c.concluded_window == day, e.c.outcome == "confirmed", e.c.pattern_id.in_(list(pattern_ids))
            )
        ).all()
        events += [f"{p}: watch #{i} confirmed the promotion" for p, i in confirmed]
    return events


def run_demo(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    warehouse: Engine,
    source: Engine,
    *,
    days: int = DEFAULT_DAYS,
    seed: int = DEFAULT_SEED,
    per_day: int = DEFAULT_PER_DAY,
    end: date | None = None,
    patterns: Sequence[PatternTruth] | None = None,
    progress: Callable[[str], None] | None = print,
) -> list[DemoRow]:
    """Simulates `days` days ending at `end` (default yesterday, UTC), running the loop after
    each; returns the final table. The databases should be fresh (see `has_demo_data`)."""
    patterns = list(patterns or demo_patterns())
    say = progress or (lambda _message: None)
    keys = register_patterns(warehouse, instance, patterns)
    ids = [p.pattern_id for p in patterns]
    dates = window_days(days, end)
    record_first_window(warehouse, dates[0])  # where `make ui`'s daily partitions will start
    for day_index, day in enumerate(dates):
        started = clock.perf_counter()
        frames = []
        with warehouse.connect() as conn:
            for index, truth in enumerate(patterns):
                frames.append(
                    simulate_day(
                        truth, index, day, day_index, per_day, seed,
                        lambda units, truth=truth: registry_routing(conn, truth, day, units),
                    )
                )
        with source.begin() as conn:
            for frame in frames:
                bulk_insert(conn, tables.hook_executions, frame)
        materialize_windows(defs, instance, keys, day, day, run_config=quiet_run_config(midnight_after(day)))
        events = _events(warehouse, ids, day)
        say(
            f"day {day_index + 1:>2}/{days} {day}: {sum(len(f) for f in frames)} executions, loop ran in "
            f"{clock.perf_counter() - started:.1f}s" + "".join(f"\n         {event}" for event in events)
        )
    return outcomes(warehouse, patterns)


def _last_result(conn, experiment_id: int) -> tuple[date, dict] | None:
    ab = tables.ab_results
    row = conn.execute(
        sa.select(ab.c.window_start, ab.c.result)
        .where(ab.c.experiment_id == experiment_id)
        .order_by(ab.c.window_start.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row else None


def outcomes(warehouse: Engine, patterns: Sequence[PatternTruth]) -> list[DemoRow]:
    """The final table from the experiments, decisions and A/B results tables."""
    rows = []
    with warehouse.connect() as conn:
        for truth in patterns:
            experiments = list_experiments(conn, truth.pattern_id)
            active = get_label(conn, truth.pattern_id, ACTIVE)
            ab = next((x for x in experiments if x.kind == ExperimentKind.AB), None)
            deciding: Experiment | None = ab
            if ab is None:
                actual = NO_EXPERIMENT
            elif ab.status == "running":
                actual = RUNNING
            elif ab.outcome == "promoted":
                watch = next(
                    (x for x in experiments if x.kind == ExperimentKind.WATCH and x.treatment.id == ab.treatment.id and x.id > ab.id), None
                )
                actual = PROMOTED
                if watch is not None and watch.outcome == "rolled_back":
                    actual, deciding = ROLLED_BACK, watch
            else:
                actual = {"rejected": REJECTED, "inconclusive": INCONCLUSIVE}.get(ab.outcome, str(ab.outcome))
            look = _last_result(conn, deciding.id) if deciding else None
            lead = look[1].get("lead_metric") if look else None
            metric = look[1]["metrics"].get(lead, {}) if lead else {}
            reason = ""
            if deciding is not None:
                reason = deciding.reason or (look[1]["reason"] if look else "no look yet")
                later = [x for x in experiments if x.kind == ExperimentKind.AB and x.id != ab.id]
                if later:
                    reason += f" (then {len(later)} more A/B experiment(s))"
            elif truth.policy.auto_apply is False:
                reason = f"policy '{truth.policy.name}' observes only: no experiment, nothing changes"
            match = truth.expected == actual
            if truth.expected in (NO_EXPERIMENT, INCONCLUSIVE, ROLLED_BACK):
                match = match and active is not None and active.version == FIRST_VERSION
            rows.append(
                DemoRow(
                    pattern_id=truth.pattern_id,
                    planted=truth.planted,
                    expected=truth.expected,
                    actual=actual,
                    active=active.version if active else "-",
                    experiment=(
                        f"#{deciding.id} {deciding.kind} {deciding.treatment.version} vs {deciding.control.version}"
                        if deciding else "-"
                    ),
                    lead_metric=lead,
                    lift=lift_text(lead, metric),
                    effect=metric,
                    executions=(look[1]["n_control"] + look[1]["n_treatment"]) if look else None,
                    decided=deciding.concluded_window if deciding else None,
                    reason=reason,
                    match=match,
                )
            )
    return rows


def lift_text(metric: str | None, effect: dict) -> str:
    """The lead metric's effect and interval as every reader gets it (`lib/stats/units.py`):
    treatment minus control in the metric's own unit, `[low, high]`."""
    if not metric or not effect:
        return "-"
    return format_effect(effect, label=True)


def format_table(rows: Sequence[DemoRow], width: int = 110) -> str:
    """The final table: planted truth, expected and actual outcome, lift with its interval,
    executions used and whether they match; then each decision's reason."""
    header = ("pattern", "expected", "actual", "active", "deciding experiment", "lead metric: effect [CI]", "executions", "match")
    body = []
    for r in rows:
        body.append(
            (r.pattern_id, r.expected, r.actual, r.active, r.experiment, r.lift,
             f"{r.executions:,}" if r.executions is not None else "-", "✓" if r.match else "✗")
        )
    widths = [max(len(str(x)) for x in column) for column in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(header), line(["-" * w for w in widths]), *map(line, body), ""]
    for r in rows:
        out.append(f"{r.pattern_id}")
        out += textwrap.wrap(f"planted: {r.planted}", width, initial_indent="  ", subsequent_indent="    ")
        decided = f" on {r.decided}" if r.decided else ""
        out += textwrap.wrap(f"loop: {r.actual}{decided}: {r.reason}", width, initial_indent="  ", subsequent_indent="    ")
    met = sum(r.match for r in rows)
    out.append("")
    out.append(f"{met}/{len(rows)} planted outcomes met")
    return "\n".join(out)
