"""A change an experiment rejected, rolled back or ended inconclusive (or a person stopped) is
not proposed again on the same active version; the demo's rolled-back timeout fix was otherwise
re-tested every week. An inconclusive experiment frees the pattern for its next proposal."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from feedback_loop_dagster.defs.code_location.clock import midnight_after
from feedback_loop_dagster.lib.analyze.analysis import analyze_partitions
from feedback_loop_dagster.lib.apply.decisions import end_inconclusive
from feedback_loop_dagster.lib.experiment.experiments import start_from_proposal
from feedback_loop_dagster.lib.propose.proposals import propose
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster_tests.loop.traffic import PATTERN, POLICY, START, load, traffic


def _three_days_with_timeouts(engine):
    """Three analysed days whose timeouts make the analyzers propose raising the timeout; the last day."""
    days = [(d, traffic(START + timedelta(days=d), 300, 0.85, timeout_rate=0.10, seed=d)) for d in range(3)]
    pairs = load(engine, days)
    analyze_partitions(engine, pairs)
    return pairs[-1][1]


@pytest.mark.parametrize("settled", ["rejected", "rolled_back", "stopped", "inconclusive"])
def test_a_settled_proposal_is_not_proposed_again_on_the_same_version(engine, settled):
    window = _three_days_with_timeouts(engine)
    p = tables.proposals
    with engine.begin() as conn:
        (first,) = propose(conn, PATTERN, window, POLICY).created
        conn.execute(p.update().where(p.c.id == first).values(status=settled))
        again = propose(conn, PATTERN, window + timedelta(days=1), POLICY)
        assert again.created == [] and again.seen_again == [] and again.already_tried == [first]
        assert conn.scalar(sa.select(sa.func.count()).select_from(p)) == 1
        assert conn.scalar(sa.select(p.c.status).where(p.c.id == first)) == settled


def test_after_an_inconclusive_experiment_the_next_proposal_starts(engine):
    window = _three_days_with_timeouts(engine)
    p = tables.proposals
    with engine.begin() as conn:
        (first,) = propose(conn, PATTERN, window, POLICY).created
        row = dict(conn.execute(sa.select(p).where(p.c.id == first)).mappings().one())
        # a second, lower-priority change waiting behind the first
        row.update(id=None, title="another change", patch={"model": "large"}, fingerprint="another",
                   priority=row["priority"] - 1)
        row.pop("id")
        second = conn.execute(p.insert().values(**row)).inserted_primary_key[0]
        experiment = start_from_proposal(conn, PATTERN, window, POLICY, now=midnight_after(window))
        assert experiment.proposal_id == first
        last = experiment.start_window + timedelta(days=13)
        ended = end_inconclusive(conn, experiment, last, {"reason": "inconclusive: no decision after 14 days",
                                                          "recommendation": "inconclusive"})
        assert ended.action == "inconclusive"
        assert conn.scalar(sa.select(p.c.status).where(p.c.id == first)) == "inconclusive"
        # the same change is not proposed again; the pattern moves on to the next one
        again = propose(conn, PATTERN, window + timedelta(days=1), POLICY)
        assert again.already_tried == [first] and again.created == []
        following = start_from_proposal(conn, PATTERN, last, POLICY, now=midnight_after(last))
        assert following is not None and following.proposal_id == second
        assert conn.scalar(sa.select(p.c.status).where(p.c.id == second)) == "experimenting"
