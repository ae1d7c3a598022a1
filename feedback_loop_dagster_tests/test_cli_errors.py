"""README's error rules for `feedback-loop`, on bad input: a user error (usage errors included)
is one `error:` line and exit status 1; `--debug` shows its traceback; a bug keeps its traceback.

Usage errors and unknown names run in-process (click's runner); what depends on the process
(a database path the OS refuses, the traceback a person sees) runs as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from feedback_loop_dagster.cli import main
from feedback_loop_dagster.lib.registry.versions import register_version, set_label
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster_tests.factories import execution, insert_executions
from feedback_loop_dagster_tests.processes import CEILING_SECONDS

CLI = [sys.executable, "-m", "feedback_loop_dagster.cli"]
HASHED = "agent|planner, v2"  # not a safe partition key: registered as agent-planner-v2-<hash>


def _env(url: str, tmp_path: Path) -> dict[str, str]:
    return {"FEEDBACK_LOOP_DATABASE_URL": url, "FEEDBACK_LOOP_SOURCE_URL": url, "DAGSTER_HOME": str(tmp_path / "home"),
            "USER": "tester"}


def invoke(args: list[str], url: str = "sqlite://", tmp_path: Path = Path("/nonexistent")):
    return CliRunner().invoke(main, args, env=_env(url, tmp_path))


def error_line(result) -> str:
    """The single `error:` line of a failed command (exit status 1, nothing else on stderr)."""
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == "", result.stdout
    return lines[0]


def subprocess_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=CEILING_SECONDS)


@pytest.mark.parametrize(
    "args, says",
    [
        (["run", "--pattern", "p", "--window", "2026-13-45"], "invalid value for '--window': '2026-13-45' is not a day"),
        (["backfill", "--start", "today-x", "--end", "today"], "invalid value for '--start': 'today-x' is not a day"),
        (["experiments", "start", "p", "v2", "--split", "1.5"], "invalid value for '--split': 1.5 is not in the range"),
        (["lineage"], "missing argument 'PATTERN'"),
        (["lineage", "p", "--format", "xml"], "invalid value for '--format'"),
        (["--no-such-option"], "no such option '--no-such-option'"),
        (["no-such-command"], "no such command 'no-such-command'"),
        (["experiments", "stop"], "give an EXPERIMENT_ID or --pattern, not both"),
    ],
)
def test_usage_errors_are_one_line_and_exit_status_1(args, says):
    line = error_line(invoke(args))
    assert says in line
    assert line.endswith("--help')")  # where to read the usage


def test_a_group_without_its_subcommand_shows_its_help_and_exit_status_1():
    result = invoke(["versions"])
    assert result.exit_code == 1 and "Usage:" in result.output and "register" in result.output


def test_usage_error_through_a_real_process(tmp_path):
    done = subprocess_cli("backfill", "--start", "2026-13-45", "--end", "today", env=_env("sqlite://", tmp_path))
    assert done.returncode == 1
    assert done.stderr.startswith("error: invalid value for '--start'") and len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize("where", ["proc", "under a file"])
def test_a_sqlite_path_that_cannot_be_created_is_one_clear_line(tmp_path, where):
    regular = tmp_path / "regular"
    regular.write_text("not a folder")
    path, reason = {
        "proc": ("/proc/nope/y.db", "cannot create folder /proc/nope"),
        "under a file": (f"{regular}/sub/y.db", f"{regular} is a file, not a folder"),
    }[where]
    done = subprocess_cli("init-db", env=_env(f"sqlite:///{path}", tmp_path))
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == f"error: cannot create SQLite database '{path}': {reason}" + (
        " (No such file or directory)" if where == "proc" else ""
    )


def test_a_file_that_is_not_a_database_is_one_clear_line(tmp_path):
    regular = tmp_path / "notes.txt"
    regular.write_text("hello, not SQLite\n" * 100)
    done = subprocess_cli("init-db", env=_env(f"sqlite:///{regular}", tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: cannot connect to sqlite:///{regular}: file is not a database"


def test_a_programming_error_keeps_its_traceback(monkeypatch):
    """A KeyError is a bug, not a user error: it is not turned into `error: 'x'`."""
    import feedback_loop_dagster.cli.policies as policies

    def broken(*_args, **_kwargs):
        raise KeyError("x")

    monkeypatch.setattr(policies, "echo_table", broken)
    result = invoke(["policies", "show"])
    assert isinstance(result.exception, KeyError) and "error:" not in result.stderr


def test_debug_shows_the_traceback_of_a_user_error(migrated_url, tmp_path):
    plain = error_line(invoke(["lineage", "nobody"], migrated_url, tmp_path))
    assert plain.startswith("error: unknown pattern 'nobody'")
    debug = subprocess_cli("--debug", "lineage", "nobody", env=_env(migrated_url, tmp_path))
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "UnknownPattern: unknown pattern 'nobody'" in debug.stderr


PATTERN_COMMANDS = [
    ["run", "--pattern", "{p}"],
    ["backfill", "--start", "today-2", "--end", "yesterday", "--pattern", "{p}"],
    ["policies", "show", "{p}"],
    ["policies", "set", "{p}", "--preset", "development"],
    ["versions", "list", "{p}"],
    ["versions", "show", "{p}", "v1"],
    ["versions", "register", "{p}", "v2", "--config", "{{}}"],
    ["versions", "diff", "{p}", "v1", "v2"],
    ["experiments", "list", "--pattern", "{p}"],
    ["experiments", "start", "{p}", "v2"],
    ["experiments", "stop", "--pattern", "{p}"],
    ["rollback", "{p}"],
    ["lineage", "{p}"],
    ["health", "{p}"],
]


def test_an_unknown_pattern_is_the_same_error_in_every_command(migrated_url, tmp_path):
    expected = ("error: unknown pattern 'nobody': no pattern has this id or partition key (`feedback-loop patterns list`) "
                "and hook_executions has no executions of it")
    for command in PATTERN_COMMANDS:
        args = [a.format(p="nobody") for a in command]
        assert error_line(invoke(args, migrated_url, tmp_path)) == expected, args


def test_every_pattern_command_accepts_a_partition_key(engine, migrated_url, tmp_path):
    """A hashed partition key (as the UI shows it) names the same pattern as its original id."""
    key = register_pattern_ids(engine, [HASHED])[HASHED]
    assert key.startswith("agent-planner-v2-") and key != HASHED
    with engine.begin() as conn:
        v1 = register_version(conn, HASHED, "v1", {"timeout_ms": 1000})
        set_label(conn, HASHED, "active", v1.id, None)
    for by in (HASHED, key):
        listed = invoke(["versions", "list", by, "--json"], migrated_url, tmp_path)
        assert listed.exit_code == 0 and '"version": "v1"' in listed.stdout, listed.output
        shown = invoke(["lineage", by], migrated_url, tmp_path)
        assert shown.exit_code == 0 and shown.stdout.startswith(f"{HASHED!r}: 1 version(s), active v1"), shown.output
    assert invoke(["policies", "set", key, "--preset", "development"], migrated_url, tmp_path).exit_code == 0
    assert invoke(["versions", "register", key, "v2", "--patch", '{"timeout_ms": 2000}'], migrated_url, tmp_path).exit_code == 0
    started = invoke(["experiments", "start", key, "v2", "--split", "0.3"], migrated_url, tmp_path)
    assert started.exit_code == 0 and f"of {HASHED!r}" in started.stdout
    assert invoke(["experiments", "list", "--pattern", key, "--json"], migrated_url, tmp_path).stdout.count(HASHED) == 1
    stopped = invoke(["experiments", "stop", "--pattern", key], migrated_url, tmp_path)
    assert stopped.exit_code == 0, stopped.output
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(tables.pattern_policies.c.pattern_id, tables.pattern_policies.c.policy)).all())
        names = conn.execute(sa.select(tables.pattern_versions.c.pattern_id, tables.pattern_versions.c.version)).all()
    assert list(stored) == [HASHED]  # stored under the original id, never the key
    assert sorted(names) == [(HASHED, "v1"), (HASHED, "v2")]


def test_a_pattern_known_only_from_its_executions_is_known(engine, migrated_url, tmp_path):
    insert_executions(engine, [execution(pattern_id="fresh-pattern")])
    shown = invoke(["policies", "show", "fresh-pattern", "--json"], migrated_url, tmp_path)
    assert shown.exit_code == 0 and '"name": "production"' in shown.stdout


def test_policies_set_on_an_unknown_pattern_needs_create(engine, migrated_url, tmp_path):
    refused = error_line(invoke(["policies", "set", "new-pattern", "--preset", "quality"], migrated_url, tmp_path))
    assert refused.startswith("error: unknown pattern 'new-pattern'")
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(tables.pattern_policies)) == 0
    created = invoke(["policies", "set", "new-pattern", "--preset", "quality", "--create"], migrated_url, tmp_path)
    assert created.exit_code == 0, created.output
    listed = invoke(["patterns", "list", "--json"], migrated_url, tmp_path)
    assert '"pattern_id": "new-pattern"' in listed.stdout and '"policy": "quality"' in listed.stdout
    # now known: no --create needed, and an unknown preset is a one-line error
    assert invoke(["policies", "set", "new-pattern", "--set", "min_sample_size=60"], migrated_url, tmp_path).exit_code == 0
    assert error_line(invoke(["policies", "set", "new-pattern", "--preset", "fast"], migrated_url, tmp_path)) == (
        "error: unknown preset 'fast': choose one of production, development, quality, monitoring")


@pytest.mark.parametrize(
    "name",
    ["v2\nclick v2 call alert(1)", 'click v1 "javascript:alert(1)"', "v2\x00", "v" * 65, "active", " v2", "v2;rm"],
)
def test_version_names_are_validated_and_nothing_is_stored(engine, migrated_url, tmp_path, name):
    with engine.begin() as conn:
        v1 = register_version(conn, "code-review", "v1", {"timeout_ms": 1000})
        set_label(conn, "code-review", "active", v1.id, None)
    line = error_line(invoke(["versions", "register", "code-review", name, "--patch", '{"timeout_ms": 5}'], migrated_url, tmp_path))
    assert line.startswith(f"error: version name {name!r} is ") and ("not allowed" in line or "reserved" in line)
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(tables.pattern_versions)) == 1
        assert conn.scalar(sa.select(sa.func.count()).select_from(tables.lineage_edges)) == 0


def test_versions_register_on_an_unknown_pattern_needs_create(engine, migrated_url, tmp_path):
    assert error_line(invoke(["versions", "register", "brand-new", "v1", "--config", '{"a": 1}'], migrated_url, tmp_path)).startswith(
        "error: unknown pattern 'brand-new'")
    made = invoke(["versions", "register", "brand-new", "v1", "--config", '{"a": 1}', "--create", "--activate"], migrated_url, tmp_path)
    assert made.exit_code == 0 and "registered brand-new@v1" in made.stdout, made.output
    with engine.connect() as conn:
        assert conn.scalar(sa.select(tables.patterns.c.partition_key).where(tables.patterns.c.pattern_id == "brand-new")) == "brand-new"


def test_run_before_the_first_partition_is_one_clear_line(engine, migrated_url, tmp_path, monkeypatch):
    monkeypatch.setenv("FEEDBACK_LOOP_START_DATE", "2026-01-10")
    insert_executions(engine, [execution(pattern_id="early")])
    refused = error_line(invoke(["run", "--pattern", "early", "--window", "2026-01-01"], migrated_url, tmp_path))
    assert refused == ("error: window 2026-01-01 is before the first daily partition 2026-01-10 "
                       "(set FEEDBACK_LOOP_START_DATE to an earlier date)")
