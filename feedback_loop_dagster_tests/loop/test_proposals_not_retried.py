"""A change an experiment rejected or rolled back (or a person stopped) is not proposed again on
the same active version; the demo's rolled-back timeout fix was otherwise re-tested every week."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from feedback_loop_dagster.lib.analyze.analysis import analyze_partitions
from feedback_loop_dagster.lib.propose.proposals import propose
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster_tests.loop.test_analysis_and_proposals import PATTERN, POLICY, START, load, traffic


@pytest.mark.parametrize("settled", ["rejected", "rolled_back", "stopped"])
def test_a_settled_proposal_is_not_proposed_again_on_the_same_version(engine, settled):
    days = [(d, traffic(START + timedelta(days=d), 300, 0.85, timeout_rate=0.10, seed=d)) for d in range(3)]
    pairs = load(engine, days)
    analyze_partitions(engine, pairs)
    window = pairs[-1][1]
    p = tables.proposals
    with engine.begin() as conn:
        (first,) = propose(conn, PATTERN, window, POLICY).created
        conn.execute(p.update().where(p.c.id == first).values(status=settled))
        again = propose(conn, PATTERN, window + timedelta(days=1), POLICY)
        assert again.created == [] and again.seen_again == [] and again.already_tried == [first]
        assert conn.scalar(sa.select(sa.func.count()).select_from(p)) == 1
        assert conn.scalar(sa.select(p.c.status).where(p.c.id == first)) == settled
