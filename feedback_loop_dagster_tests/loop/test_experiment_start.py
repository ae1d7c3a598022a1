"""Where an experiment starts: the window after the proposal's, but never a window that is already
complete when the experiment is created. A complete window's executions ran without the split
(all on the control version), so an experiment starting there would fail its sample-ratio check
on every look and never decide; run over past windows (a backfill, a range run over history, a
re-materialised old partition), the loop starts experiments in the window open now."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from feedback_loop_dagster.lib.analyze.analysis import analyze_partitions
from feedback_loop_dagster.lib.experiment.experiments import (
    experiment_start_window,
    open_window,
    running_experiment,
    start_from_proposal,
)
from feedback_loop_dagster.lib.propose.proposals import propose
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster_tests.loop.traffic import PATTERN, POLICY, START, load, traffic


def midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


@pytest.mark.parametrize(
    ("window", "now", "start"),
    [
        # The loop on the window that just closed (the schedule after midnight): the next window.
        (START, midnight(START + timedelta(days=1)), START + timedelta(days=1)),
        (START, midnight(START + timedelta(days=1)) + timedelta(hours=5), START + timedelta(days=1)),
        # On today's open window (the sensor): tomorrow, as before.
        (START, midnight(START) + timedelta(hours=13), START + timedelta(days=1)),
        # Over history: the next window is complete, so the window open now.
        (START, midnight(START + timedelta(days=2)), START + timedelta(days=2)),
        (START, datetime(2026, 11, 28, 7, 48, tzinfo=UTC), date(2026, 11, 28)),
        # Windows are UTC days whatever the clock's zone; a naive clock is UTC.
        (START, datetime(2026, 3, 3, 1, 0, tzinfo=timezone(timedelta(hours=2))), START + timedelta(days=1)),
        (START, datetime(2026, 3, 3, 23, 0, tzinfo=timezone(timedelta(hours=-2))), START + timedelta(days=2)),
        (START, datetime(2026, 3, 4, 0, 0), START + timedelta(days=2)),
    ],
)
def test_the_start_is_the_next_window_unless_it_is_already_complete(window, now, start):
    assert experiment_start_window(window, now) == start
    assert experiment_start_window(window, now) >= open_window(now)


def _proposal_on(engine, window: date) -> None:
    """Three days of traffic with timeouts up to `window`, analysed and proposed on (an open
    proposal with a patch: raise the timeout)."""
    days = [(d, traffic(START + timedelta(days=d), 300, 0.85, timeout_rate=0.10, seed=d)) for d in range(3)]
    pairs = load(engine, days)
    analyze_partitions(engine, pairs)
    assert pairs[-1][1] == window
    with engine.begin() as conn:
        assert len(propose(conn, PATTERN, window, POLICY).created) == 1


def test_a_proposal_on_an_old_window_starts_its_experiment_in_the_open_window(engine):
    """A backfill (now = the real clock, today) reaches an old window with a proposal: the
    experiment starts in today's open window, not in the complete window after the proposal's."""
    window = START + timedelta(days=2)
    _proposal_on(engine, window)
    before = datetime.now(UTC).date()
    with engine.begin() as conn:
        started = start_from_proposal(conn, PATTERN, window, POLICY)  # the real clock
    after = datetime.now(UTC).date()
    assert started is not None
    assert started.start_window > window + timedelta(days=1), "started on a complete, past window"
    assert before <= started.start_window <= after  # today's window (robust to a midnight in between)
    with engine.connect() as conn:
        stored = conn.execute(sa.select(tables.experiments.c.start_window)).scalar_one()
        assert stored == started.start_window
        assert running_experiment(conn, PATTERN).start_window == started.start_window
        # Later windows of the same backfill start nothing else.
    with engine.begin() as conn:
        assert start_from_proposal(conn, PATTERN, window + timedelta(days=1), POLICY) is None


def test_a_proposal_on_an_old_window_with_a_fixed_now_starts_in_that_day(engine):
    window = START + timedelta(days=2)
    _proposal_on(engine, window)
    now = datetime(2026, 11, 28, 7, 48, tzinfo=UTC)
    with engine.begin() as conn:
        started = start_from_proposal(conn, PATTERN, window, POLICY, now=now)
    assert started.start_window == date(2026, 11, 28)


def test_with_the_simulated_clock_the_experiment_starts_at_the_next_window(engine):
    """Simulating the day (now = the midnight that closes the proposal's window) keeps the old
    behaviour: the experiment starts at the next window."""
    window = START + timedelta(days=2)
    _proposal_on(engine, window)
    with engine.begin() as conn:
        started = start_from_proposal(conn, PATTERN, window, POLICY, now=midnight(window + timedelta(days=1)))
    assert started.start_window == window + timedelta(days=1)
