"""Decision paths (SQLite): apply, reject, wait, review, rollback, invalid on SRM;
idempotency, a process killed mid-promotion, and two concurrent promotions (PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from feedback_loop_dagster.defs.code_location.clock import midnight_after
from feedback_loop_dagster.lib.apply.decisions import act_on_result
from feedback_loop_dagster.lib.experiment.experiments import get_experiment, running_experiment
from feedback_loop_dagster.lib.operator_actions.reviews import approve, dismiss
from feedback_loop_dagster.lib.registry.versions import ACTIVE, CANDIDATE, get_label
from feedback_loop_dagster.lib.stats import get_preset
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.validate.ab_results import evaluate_as_of
from feedback_loop_dagster_tests.loop.builders import PATTERN, add_days, pattern_with_candidate
from feedback_loop_dagster_tests.processes import CEILING_SECONDS, wait_for


def decide(engine, experiment_id, window):
    """The loop's decision on `window`, as the run just after that window closes makes it."""
    with engine.begin() as conn:
        experiment = get_experiment(conn, experiment_id)
        result = evaluate_as_of(conn, experiment, window)
        return act_on_result(conn, experiment, window, result, now=midnight_after(window))


def registry_state(engine):
    with engine.connect() as conn:
        return {
            "active": get_label(conn, PATTERN, ACTIVE).version,
            "candidate": (get_label(conn, PATTERN, CANDIDATE) or None) and get_label(conn, PATTERN, CANDIDATE).version,
            "experiments": conn.execute(
                sa.select(tables.experiments.c.kind, tables.experiments.c.status, tables.experiments.c.outcome)
                .order_by(tables.experiments.c.id)
            ).all(),
            "decisions": conn.execute(sa.select(tables.decisions.c.action, tables.decisions.c.status)).all(),
            "edges": conn.execute(
                sa.select(tables.lineage_edges.c.edge_type).order_by(tables.lineage_edges.c.id)
            ).scalars().all(),
        }


def test_a_true_improvement_is_promoted_and_then_watched(engine):
    _, _, experiment = pattern_with_candidate(engine)
    last = add_days(engine, experiment, 5, 300, 300, 0.80, 0.92)
    action = decide(engine, experiment.id, last)
    assert action.action == "promoted", action.reason
    state = registry_state(engine)
    assert state["active"] == "v2" and state["candidate"] is None
    assert state["experiments"] == [("ab", "concluded", "promoted"), ("watch", "running", None)]
    assert state["decisions"] == [("apply", "done")]
    assert state["edges"] == ["derived_from", "promoted_over"]
    with engine.connect() as conn:
        watch = running_experiment(conn, PATTERN)
    assert (watch.control.version, watch.treatment.version, watch.traffic_split) == ("v1", "v2", 0.8)
    assert watch.start_window == last + timedelta(days=1)
    # Acting on the same evidence again changes nothing.
    assert decide(engine, experiment.id, last).action == "none"
    assert registry_state(engine) == state


def test_a_harmful_candidate_is_rejected(engine):
    _, _, experiment = pattern_with_candidate(engine)
    last = add_days(engine, experiment, 5, 300, 300, 0.85, 0.65)
    assert decide(engine, experiment.id, last).action == "rejected"
    state = registry_state(engine)
    assert state["active"] == "v1" and state["candidate"] is None
    assert state["experiments"] == [("ab", "concluded", "rejected")]
    assert state["decisions"] == [("reject", "done")]


def test_without_evidence_the_loop_waits(engine):
    _, _, experiment = pattern_with_candidate(engine)
    last = add_days(engine, experiment, 2, 100, 100, 0.85, 0.85)
    assert decide(engine, experiment.id, last).action == "waiting"
    state = registry_state(engine)
    assert state["active"] == "v1" and state["candidate"] == "v2" and state["decisions"] == []


def test_an_experiment_without_a_decision_by_its_last_day_ends_inconclusive(engine):
    policy = get_preset("development", feedback_type="reliability", min_sample_size=50, max_experiment_days=3)
    _, _, experiment = pattern_with_candidate(engine, policy)
    last = add_days(engine, experiment, 3, 100, 100, 0.85, 0.85)
    assert decide(engine, experiment.id, last - timedelta(days=1)).action == "waiting"
    action = decide(engine, experiment.id, last)
    assert action.action == "inconclusive", action.reason
    assert action.reason.startswith("inconclusive: no decision after 3 days (max_experiment_days 3); control kept")
    state = registry_state(engine)
    assert state["active"] == "v1" and state["candidate"] is None
    assert state["experiments"] == [("ab", "concluded", "inconclusive")]
    assert state["decisions"] == [("keep", "done")]
    # acting on the same evidence again changes nothing
    assert decide(engine, experiment.id, last).action == "none"
    assert registry_state(engine) == state


def test_a_sample_ratio_mismatch_decides_nothing_even_with_a_large_effect(engine):
    _, _, experiment = pattern_with_candidate(engine)
    last = add_days(engine, experiment, 5, 400, 200, 0.80, 0.95)
    with engine.begin() as conn:
        result = evaluate_as_of(conn, get_experiment(conn, experiment.id), last)
    assert result.recommendation == "invalid" and not result.srm_passed
    assert decide(engine, experiment.id, last).action == "waiting"
    assert registry_state(engine)["active"] == "v1"


@pytest.mark.parametrize("reviewer_says", ["approve", "reject"])
def test_review_policy_queues_and_a_human_decides(engine, reviewer_says):
    policy = get_preset("development", feedback_type="reliability", min_sample_size=50, require_review=True)
    _, _, experiment = pattern_with_candidate(engine, policy)
    last = add_days(engine, experiment, 5, 300, 300, 0.80, 0.92)
    action = decide(engine, experiment.id, last)
    assert action.action == "queued_for_review"
    assert decide(engine, experiment.id, last).action == "queued_for_review"  # queued once
    with engine.connect() as conn:
        (decision_id,) = conn.execute(sa.select(tables.decisions.c.id)).scalars().all()
    assert registry_state(engine)["active"] == "v1"
    with engine.begin() as conn:
        outcome = (approve if reviewer_says == "approve" else dismiss)(conn, decision_id, "ana")
    state = registry_state(engine)
    if reviewer_says == "approve":
        assert outcome.action == "promoted" and state["active"] == "v2"
        assert state["decisions"] == [("apply", "done")]
    else:
        assert outcome.action == "rejected" and state["active"] == "v1"
        assert state["decisions"] == [("reject", "dismissed")]
    with engine.begin() as conn, pytest.raises(ValueError, match="not pending review"):
        approve(conn, decision_id, "ana")


def test_monitoring_never_changes_anything(engine):
    _, _, experiment = pattern_with_candidate(engine, get_preset("monitoring", enable_ab_testing=True))
    last = add_days(engine, experiment, 5, 300, 300, 0.70, 0.95)
    assert decide(engine, experiment.id, last).action == "observed"
    assert registry_state(engine)["active"] == "v1"


def test_a_promotion_that_turns_harmful_is_rolled_back(engine):
    _, _, experiment = pattern_with_candidate(engine)
    promoted_on = add_days(engine, experiment, 5, 300, 300, 0.80, 0.92)
    assert decide(engine, experiment.id, promoted_on).action == "promoted"
    with engine.connect() as conn:
        watch = running_experiment(conn, PATTERN)
    # v1 keeps a 20% holdback; v2 now fails far more often.
    last = add_days(engine, watch, 4, 100, 400, 0.90, 0.70)
    action = decide(engine, watch.id, last)
    assert action.action == "rolled_back", action.reason
    state = registry_state(engine)
    assert state["active"] == "v1"
    assert state["edges"] == ["derived_from", "promoted_over", "rolled_back_to"]
    assert state["decisions"] == [("apply", "done"), ("rollback", "done")]
    # Evidence older than the rollback can no longer move the label.
    assert decide(engine, watch.id, last - timedelta(days=1)).action == "none"


def test_stale_evidence_does_not_move_a_label(engine):
    _, _, experiment = pattern_with_candidate(engine)
    last = add_days(engine, experiment, 5, 300, 300, 0.80, 0.92)
    with engine.begin() as conn:
        conn.execute(tables.pattern_labels.update().values(evidence_window=last + timedelta(days=3)))
    assert decide(engine, experiment.id, last).action == "none"
    assert registry_state(engine)["active"] == "v1"


KILLED_PROMOTION = textwrap.dedent(
    """
    import sys, time
    from feedback_loop_dagster.lib.apply.decisions import act_on_result
    from feedback_loop_dagster.lib.experiment.experiments import get_experiment
    from feedback_loop_dagster.lib.storage.database import get_engine
    from feedback_loop_dagster.lib.validate.ab_results import evaluate_as_of
    from datetime import date
    engine = get_engine(sys.argv[1])
    with engine.begin() as conn:
        experiment = get_experiment(conn, int(sys.argv[2]))
        window = date.fromisoformat(sys.argv[3])
        print(act_on_result(conn, experiment, window, evaluate_as_of(conn, experiment, window)).action, flush=True)
        while True:  # killed here: the promotion is written but not committed
            time.sleep(1)
    """
)


def _transactions_left_open(engine) -> int:
    """Other sessions on the database still inside a transaction (a killed client's, until the
    server notices it is gone)."""
    with engine.connect() as conn:
        return conn.scalar(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"))


@pytest.mark.postgres
def test_a_process_killed_mid_promotion_leaves_the_registry_as_before(postgres_engine, tmp_path):
    engine = postgres_engine
    database_url = engine.url.render_as_string(hide_password=False)
    _, _, experiment = pattern_with_candidate(engine)
    last = add_days(engine, experiment, 5, 300, 300, 0.80, 0.92)
    before = registry_state(engine)
    script = tmp_path / "promote.py"
    script.write_text(KILLED_PROMOTION)
    process = subprocess.Popen(
        [sys.executable, str(script), database_url, str(experiment.id), last.isoformat()],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert process.stdout.readline().strip() == "promoted"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=CEILING_SECONDS)
    assert registry_state(engine) == before  # its writes were never committed
    # The server notices the dead client and rolls back: the promotion's locks are free again.
    wait_for(lambda: not _transactions_left_open(engine), "the server to roll the killed promotion back")
    assert decide(engine, experiment.id, last).action == "promoted"
    assert registry_state(engine)["active"] == "v2"


@pytest.mark.postgres
def test_two_concurrent_runs_promote_once(postgres_engine):
    engine = postgres_engine
    _, _, experiment = pattern_with_candidate(engine)
    last = add_days(engine, experiment, 5, 300, 300, 0.80, 0.92)
    with engine.begin() as conn:
        evaluate_as_of(conn, get_experiment(conn, experiment.id), last)
    barrier = threading.Barrier(2)
    actions, errors = [], []

    def run():
        try:
            with engine.begin() as conn:
                loaded = get_experiment(conn, experiment.id)  # both read "running"
                barrier.wait(timeout=CEILING_SECONDS)
                result = evaluate_as_of(conn, loaded, last)
                actions.append(act_on_result(conn, loaded, last, result).action)
                time.sleep(0.3)  # hold the locks so the other transaction really waits
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=CEILING_SECONDS)
    assert not errors, errors
    assert sorted(actions) == ["none", "promoted"]
    state = registry_state(engine)
    assert state["active"] == "v2"
    assert state["decisions"] == [("apply", "done")]
    assert [e for e in state["experiments"] if e[0] == "watch"] == [("watch", "running", None)]
