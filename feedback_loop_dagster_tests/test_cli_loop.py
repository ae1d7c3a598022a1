"""The loop's `feedback-loop` commands: backfill, run, patterns list, policies, versions, experiments,
approve, reject, rollback, lineage, with their JSON output, on SQLite. backfill and run, which execute
Dagster runs, each run in a real subprocess, as does the group's --help; the other commands, error
cases and subcommands' --help run in-process (click's runner: cli_runner.in_process), which saves a
process start-up per command."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from feedback_loop_dagster.lib.apply.decisions import queue_for_review
from feedback_loop_dagster.lib.operator_actions.experiments import start_manual_experiment
from feedback_loop_dagster.lib.registry.policies import set_policy
from feedback_loop_dagster.lib.registry.versions import register_version, set_label
from feedback_loop_dagster.lib.stats import get_preset
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster_tests.cli_runner import cli, cli_error, in_process
from feedback_loop_dagster_tests.factories import execution, insert_executions, traffic

# Backfills and runs of the whole loop, each through the command in its own process.
pytestmark = pytest.mark.e2e

TODAY = datetime.now(UTC).date()
D1, D2 = TODAY - timedelta(days=3), TODAY - timedelta(days=2)


def test_every_loop_command_has_help(tmp_path):
    """--help of each subcommand in-process (no database involved); the group's through a subprocess."""
    from click.testing import CliRunner

    from feedback_loop_dagster.cli import main

    commands = [["run"], ["backfill"], ["patterns", "list"], ["policies"], ["policies", "show"], ["policies", "set"],
                ["versions"], ["versions", "list"], ["versions", "show"], ["versions", "register"], ["versions", "diff"],
                ["experiments"], ["experiments", "list"], ["experiments", "show"], ["experiments", "start"], ["experiments", "stop"],
                ["approve"], ["reject"], ["rollback"], ["lineage"]]
    for command in commands:
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0 and result.output.startswith("Usage:") and len(result.output.splitlines()) > 3, command
    top = cli("--help", url="sqlite://", tmp_path=tmp_path).stdout
    for name in ("run", "backfill", "policies", "versions", "experiments", "approve", "reject", "rollback", "lineage", "demo", "simulate"):
        assert f"  {name}" in top


@pytest.fixture
def loop_db(engine, migrated_url):
    """Two patterns with v1 active and two days of executions; no automatic experiments."""
    with engine.begin() as conn:
        for pattern_id in ("summarise", "translate"):
            v1 = register_version(conn, pattern_id, "v1", {"timeout_ms": 2000, "model": "small"}, source="manual")
            set_label(conn, pattern_id, "active", v1.id, None)
            set_policy(conn, pattern_id, get_preset("development", feedback_type="reliability", enable_ab_testing=False))
    insert_executions(engine, traffic("summarise", D1, 120, seed=1) + traffic("summarise", D2, 120, seed=2)
                      + traffic("translate", D2, 50, seed=3))
    return migrated_url


def test_backfill_run_and_the_registry_commands(loop_db, engine, tmp_path):
    url = loop_db
    done = cli("backfill", "--start", str(D1), "--end", str(D2), "--pattern", "summarise", "--pattern", "translate",
               "--json", url=url, tmp_path=tmp_path)
    assert len(json.loads(done.stdout)["runs"]) == 1 and "backfill 2 pattern(s) x 2 window(s)" in done.stderr
    with engine.connect() as conn:
        collected = conn.execute(sa.select(tables.feedback_partitions.c.pattern_id, tables.feedback_partitions.c.window_start)).all()
    assert len(collected) == 4  # translate has no executions on D1: an empty partition

    output = json.loads(cli("run", "--pattern", "summarise", "--window", str(D2), "--json", url=url, tmp_path=tmp_path).stdout)
    # the development preset's window is 3 days (time_window_days), so the run covers D1 and D2
    assert output["success"] and output["feedback_collected"] == 240 and output["workflow_stages"]["lineage"] == "completed"
    assert output["metadata"]["window"] == str(D2) and isinstance(output["p_value"], float | None)
    assert cli_error("run", "--pattern", "nobody", url=url, tmp_path=tmp_path).startswith("error: unknown pattern 'nobody'")

    registered = json.loads(in_process("versions", "register", "summarise", "v2", "--patch", '{"timeout_ms": 5000}', "--json",
                                url=url, tmp_path=tmp_path).stdout)
    assert registered["config"] == {"timeout_ms": 5000, "model": "small"}
    assert "versions are immutable" in cli_error("versions", "register", "summarise", "v2", "--config", '{"timeout_ms": 1}',
                                                 url=url, tmp_path=tmp_path)
    table, patterns, shown, diff, policy = (in_process(*command, url=url, tmp_path=tmp_path) for command in (
        ("versions", "list", "summarise"), ("patterns", "list", "--json"), ("versions", "show", "summarise", "v2"),
        ("versions", "diff", "summarise", "active", "v2", "--json"), ("policies", "show", "summarise", "--json")))
    assert table.stdout.splitlines()[0].split()[:3] == ["version", "status", "parent"]
    assert {p["pattern_id"]: p["active"] for p in json.loads(patterns.stdout)} == {"summarise": "v1", "translate": "v1"}
    assert "lineage path: v1 -> v2" in shown.stdout
    assert json.loads(diff.stdout)["patch"] == {"timeout_ms": 5000}
    assert json.loads(policy.stdout)["name"] == "development" and not json.loads(policy.stdout)["enable_ab_testing"]
    bad = cli_error("policies", "set", "summarise", "--set", "min_sample_size=0", url=url, tmp_path=tmp_path)
    assert bad.startswith("error: invalid policy for 'summarise': min_sample_size:")

    started = json.loads(in_process("experiments", "start", "summarise", "v2", "--split", "0.3", "--json",
                                    url=url, tmp_path=tmp_path).stdout)
    assert (started["control"], started["treatment"], started["traffic_split"]) == ("v1", "v2", 0.3)
    assert "already has a running experiment" in cli_error("experiments", "start", "summarise", "v2", url=url, tmp_path=tmp_path)
    listed = json.loads(in_process("experiments", "list", "--status", "running", "--json", url=url, tmp_path=tmp_path).stdout)
    assert [e["id"] for e in listed] == [started["id"]]
    stopped = in_process("experiments", "stop", str(started["id"]), "--reason", "wrong split", url=url, tmp_path=tmp_path)
    assert "stopped by tester: wrong split" in stopped.stdout
    assert "not running" in cli_error("experiments", "stop", str(started["id"]), url=url, tmp_path=tmp_path)


def test_a_bad_partition_fails_alone_backfill_goes_on_and_run_says_why(loop_db, engine, tmp_path):
    """10 malformed rows among summarise's 130 on D1 (7.7% > 5%): the backfill runs every chunk,
    ends with a table of that one failure and exits 2; `run` on that partition prints one error
    line with the reason and where to look in the UI, and exits 2."""
    url = loop_db
    insert_executions(engine, [execution(pattern_id="summarise", day=D1, minute=m, status="exploded") for m in range(10)])
    done = cli("backfill", "--start", str(D1), "--end", str(D2), "--chunk-days", "1", "--pattern", "summarise",
               "--pattern", "translate", url=url, tmp_path=tmp_path, code=2)
    lines = done.stdout.splitlines()
    assert lines[0] == "materialised 2 pattern(s) x 2 window(s) in 2 run(s)"
    assert lines[2] == "1 failure(s); the other partitions went through every stage:"
    assert lines[3].split() == ["partitions", "stage", "reason", "in", "the", "UI"]
    (row,) = lines[4:]
    assert row.startswith(f"'summarise' {D1}  feedback_dataset  7.7% of rows invalid (10 of 130), above max_invalid_share 5.0%")
    assert f"/assets/feedback_dataset?view=partitions&partition=summarise%7C{D1}" in row and "/runs/" in row
    assert "Traceback" not in done.stderr
    with engine.connect() as conn:
        metrics = set(conn.execute(sa.select(tables.pattern_metrics.c.pattern_id, tables.pattern_metrics.c.window_start)))
    # The bad partition was not analysed; the chunk after it was.
    assert ("summarise", D2) in metrics and ("summarise", D1) not in metrics

    ran = cli("run", "--pattern", "summarise", "--window", str(D1), url=url, tmp_path=tmp_path, code=2)
    errors = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in ran.stderr, ran.stderr
    (error,) = errors
    assert error.startswith(f"error: feedback_dataset failed for 'summarise' {D1}: 7.7% of rows invalid (10 of 130)")
    assert error.endswith(f"/assets/feedback_dataset?view=partitions&partition=summarise%7C{D1})")
    assert ("  workflow_stages  collect=failed, analyze=skipped, propose=skipped, experiment=skipped, "
            "validate=skipped, apply=skipped, lineage=skipped") in ran.stdout
    # Its rows were collected (the stage failed its check, it was not skipped).
    assert re.search(r"^  feedback_collected +130$", ran.stdout, re.M)


def _pending_review(engine, version: str) -> int:
    """A running experiment whose (test-supplied) verdict waits for a reviewer."""
    verdict = {"reason": "success rate +9 pts", "recommendation": "apply", "p_value": 0.004,
               "confidence_score": 0.996, "performance_delta": 0.09, "experiment_id": None}
    with engine.begin() as conn:
        experiment = start_manual_experiment(conn, "summarise", version, user="test", start_window=D1)
        queue_for_review(conn, experiment, D2, verdict)
        return conn.scalar(sa.select(tables.decisions.c.id).where(tables.decisions.c.experiment_id == experiment.id))


def test_review_rollback_and_lineage(loop_db, engine, tmp_path):
    url = loop_db
    with engine.begin() as conn:
        v1 = register_version(conn, "summarise", "v1", {"timeout_ms": 2000, "model": "small"}, source="manual")
        for name, timeout in (("v2", 4000), ("v3", 3000)):
            register_version(conn, "summarise", name, {"timeout_ms": timeout, "model": "small"}, parent_id=v1.id)
    decision = _pending_review(engine, "v2")
    approved = json.loads(in_process("approve", str(decision), "--reviewer", "ana", "--json", url=url, tmp_path=tmp_path).stdout)
    assert approved["action"] == "promoted"
    assert "not pending review" in cli_error("approve", str(decision), url=url, tmp_path=tmp_path)
    assert "no decision with id 999" in cli_error("reject", "999", url=url, tmp_path=tmp_path)
    shown = in_process("experiments", "show", str(approved["experiment"]), url=url, tmp_path=tmp_path).stdout
    assert shown.startswith(f"#{approved['experiment']} ab v2 vs v1: ") and 'patch: {"timeout_ms": 4000}' in shown
    assert re.search(rf"decision #{decision}: apply \(v1 -> v2\), done +.*\(by reviewer:ana\)", shown), shown
    assert cli_error("experiments", "show", "999", url=url, tmp_path=tmp_path) == "error: no experiment with id 999\n"
    rolled = in_process("rollback", "summarise", "--reason", "latency regressed", url=url, tmp_path=tmp_path)
    assert "rolled back 'summarise'" in rolled.stdout
    assert "no promotion under watch" in cli_error("rollback", "summarise", url=url, tmp_path=tmp_path)
    decision = _pending_review(engine, "v3")
    rejected = json.loads(in_process("reject", str(decision), "--json", url=url, tmp_path=tmp_path).stdout)
    assert rejected["action"] == "rejected"

    graph, picture, table, before = (in_process(*command, url=url, tmp_path=tmp_path) for command in (
        ("lineage", "summarise", "--format", "json"), ("lineage", "summarise", "--format", "mermaid"),
        ("lineage", "summarise"), ("lineage", "summarise", "--as-of", str(D1), "--format", "json")))
    graph = json.loads(graph.stdout)
    assert graph["active"] == {"summarise": "v1"}
    assert {n["version"]: n["status"] for n in graph["nodes"]} == {"v1": "active", "v2": "rolled_back", "v3": "archived"}
    assert {e["edge_type"] for e in graph["edges"]} == {"derived_from", "promoted_over", "rolled_back_to"}
    promoted = next(e for e in graph["edges"] if e["edge_type"] == "promoted_over")
    assert (promoted["p_value"], promoted["lift"]) == (0.004, 0.09) and promoted["decision_id"] is not None
    assert picture.stdout.startswith("flowchart RL") and '|"promoted_over: p=0.004"|' in picture.stdout
    assert "rolled_back" in table.stdout and "rolled back to v1" in table.stdout
    # As of D1 the promotion (decided in D2) had not happened.
    assert json.loads(before.stdout)["active"] == {"summarise": "v1"}
    assert cli_error("lineage", "nobody", url=url, tmp_path=tmp_path).startswith("error: unknown pattern 'nobody'")
