"""The `feedback-loop` command through a real subprocess on a real database."""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa

from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import get_engine
from feedback_loop_dagster_tests.cli_runner import cli, cli_env
from feedback_loop_dagster_tests.processes import CEILING_SECONDS


def test_init_db_creates_then_reports_up_to_date(database_url, tmp_path):
    first = cli("init-db", url=database_url, tmp_path=tmp_path)
    assert "warehouse: applied migration 1" in first.stdout
    second = cli("init-db", url=database_url, tmp_path=tmp_path)
    assert second.stdout.splitlines() == ["source: up to date", "warehouse: up to date"]


def test_simulate_then_demo_refuses_a_database_with_data(database_url, tmp_path):
    cli("init-db", url=database_url, tmp_path=tmp_path)
    simulated = cli("simulate", "--patterns", "3", "--days", "2", "--per-day", "20", "--seed", "1", url=database_url, tmp_path=tmp_path)
    assert "wrote 120 executions" in simulated.stdout
    # The demo needs empty databases and never deletes anything to get them.
    demo = cli("demo", "--days", "2", "--per-day", "30", url=database_url, tmp_path=tmp_path, code=1)
    assert demo.returncode == 1
    assert "already holds 120 execution(s)" in demo.stderr and "make clean" in demo.stderr
    engine = get_engine(database_url)
    with engine.connect() as conn:
        source = conn.scalar(sa.select(sa.func.count()).select_from(tables.hook_executions))
        versions = conn.scalar(sa.select(sa.func.count()).select_from(tables.pattern_versions))
    assert (source, versions) == (120, 0)


def test_bad_database_url_is_one_clear_line_and_exit_status_1(tmp_path):
    result = cli("init-db", url="mysql://nowhere/x", tmp_path=tmp_path, code=1)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: unsupported database in URL 'mysql://nowhere/x': use one of sqlite, postgresql"


def test_patterns_sync_without_a_source_table_names_it(database_url, tmp_path):
    result = cli("patterns", "sync", url=database_url, tmp_path=tmp_path, code=1)
    assert result.returncode == 1 and "source table 'hook_executions' not found" in result.stderr


def test_every_command_has_help(tmp_path):
    for command in (["--help"], ["init-db", "--help"], ["simulate", "--help"], ["patterns", "sync", "--help"], ["demo", "--help"]):
        assert "Usage:" in cli(*command, url="sqlite://", tmp_path=tmp_path).stdout


# Only `run`, `backfill`, `simulate`, the demo and the pattern sync need Dagster, the dataframe stack or
# scipy; importing them costs every other command (and --help) a second or more.
HEAVY_MODULES = ("dagster", "pandas", "pandera", "scipy")


def test_registry_commands_and_help_import_neither_dagster_nor_pandas_nor_scipy(migrated_url, tmp_path):
    code = ("import sys; from feedback_loop_dagster.cli import main; main(sys.argv[1:], standalone_mode=False); "
            f"print([m for m in {HEAVY_MODULES!r} if m in sys.modules])")
    commands = [
        ("--help",),
        ("versions", "register", "p", "v1", "--config", '{"timeout_ms": 500}', "--create", "--activate"),
        ("versions", "list", "p"),
        ("versions", "show", "p", "v1"),
        ("policies", "set", "p", "--set", "min_sample_size=50"),
        ("policies", "show", "p"),
        ("experiments", "list"),
        ("lineage", "p"),
    ]
    for command in commands:
        result = subprocess.run([sys.executable, "-c", code, *command], env=cli_env(migrated_url, tmp_path),
                                capture_output=True, text=True, timeout=CEILING_SECONDS)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        assert result.stdout.splitlines()[-1] == "[]", (command, result.stdout)
