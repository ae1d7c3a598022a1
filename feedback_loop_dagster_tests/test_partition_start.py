"""Daily partitions start where the data starts: the first day with executions, recorded in the
warehouse by init-db / patterns sync / simulate / the demo, read when the code location loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from feedback_loop_dagster.lib import settings
from feedback_loop_dagster.lib.partition_start import (
    earliest_window,
    record_earliest_window,
    record_first_window,
    recorded_first_window,
    window_start_date,
)
from feedback_loop_dagster.lib.storage.database import get_engine
from feedback_loop_dagster.lib.storage.tables import hook_executions
from feedback_loop_dagster_tests.cli_runner import in_process
from feedback_loop_dagster_tests.factories import execution, insert_executions
from feedback_loop_dagster_tests.processes import CEILING_SECONDS

ROOT = Path(__file__).resolve().parents[1]
# What the code location's daily partitions look like, loaded as the webserver loads it.
LOAD_PARTITIONS = (
    "import json; from feedback_loop_dagster.defs.code_location.partitions import window_partitions as w; "
    "print(json.dumps([w.start.date().isoformat(), len(w.get_partition_keys())]))"
)


@pytest.mark.both_dialects
def test_the_earliest_day_is_the_minimum_over_patterns_and_unparseable_values_are_skipped(engine):
    insert_executions(engine, [
        execution(pattern_id="a", day=date(2026, 3, 5)),
        execution(pattern_id="b", day=date(2026, 2, 27), minute=23 * 60 + 59),  # late in the day, UTC
        execution(pattern_id="b", day=date(2026, 3, 1)),
    ])
    if engine.dialect.name == "sqlite":  # a text column takes anything; the collector quarantines it
        with engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {hook_executions.name} (execution_id, pattern_id, started_at) "
                                 "VALUES ('bad', 'a', 'not a date')"))
    assert earliest_window(engine) == date(2026, 2, 27)


@pytest.mark.both_dialects
def test_the_recorded_day_only_moves_earlier(engine, migrated_url):
    assert recorded_first_window(migrated_url) is None
    assert record_first_window(engine, date(2026, 3, 5)) == date(2026, 3, 5)
    assert record_first_window(engine, date(2026, 3, 9)) == date(2026, 3, 5)  # later data changes nothing
    assert record_first_window(engine, date(2026, 1, 2)) == date(2026, 1, 2)  # older history widens it
    assert recorded_first_window(migrated_url) == date(2026, 1, 2)


@pytest.mark.both_dialects
def test_an_empty_source_or_an_unmigrated_warehouse_records_nothing(engine, tmp_path):
    assert record_earliest_window(engine, engine) is None
    bare = get_engine(f"sqlite:///{tmp_path / 'bare.db'}")
    assert record_earliest_window(bare, engine) is None


def test_reading_never_creates_a_database_nor_fails(tmp_path):
    missing = tmp_path / "no-such-folder" / "warehouse.db"
    assert recorded_first_window(f"sqlite:///{missing}") is None
    assert not missing.parent.exists()
    assert recorded_first_window(f"sqlite:///{tmp_path / 'x.db'}") is None  # no file: not created
    assert not (tmp_path / "x.db").exists()
    # A server that does not answer: the default start, and a warning in the log.
    assert recorded_first_window("postgresql+psycopg://nobody@127.0.0.1:1/none") is None


def _load_partitions(url: str) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if k != settings.START_DATE_ENV}
    environment[settings.DATABASE_URL_ENV] = url
    result = subprocess.run([sys.executable, "-c", LOAD_PARTITIONS], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=CEILING_SECONDS)
    assert result.returncode == 0, result.stderr
    first, count = json.loads(result.stdout.strip().splitlines()[-1])
    return first, count


def test_init_db_and_patterns_sync_record_the_first_day_and_the_code_location_starts_there(database_url, tmp_path, monkeypatch):
    """The commands in-process (they need no process of their own), the start they leave read as the
    code location reads it (`window_start_date`) after each; the code location itself is loaded in a
    fresh process at the end, as the webserver loads it."""
    monkeypatch.setenv(settings.DATABASE_URL_ENV, database_url)
    monkeypatch.delenv(settings.START_DATE_ENV, raising=False)
    in_process("init-db", url=database_url, tmp_path=tmp_path)
    engine = get_engine(database_url)
    # A fresh warehouse: nothing recorded yet, the default start.
    assert window_start_date() == settings.DEFAULT_WINDOW_START_DATE

    insert_executions(engine, [execution(pattern_id=p, day=date(2026, 2, d)) for p in ("a", "b") for d in (10, 11, 12)])
    synced = in_process("patterns", "sync", url=database_url, tmp_path=tmp_path)
    assert "daily partitions start at 2026-02-10" in synced.stdout
    assert window_start_date() == "2026-02-10"

    # Older history loaded later: init-db moves the start back to it.
    insert_executions(engine, [execution(pattern_id="a", day=date(2026, 1, 30))])
    assert "daily partitions start at 2026-01-30" in in_process("init-db", url=database_url, tmp_path=tmp_path).stdout
    first, count = _load_partitions(database_url)
    assert first == "2026-01-30"
    assert count == (datetime.now(UTC).date() - date(2026, 1, 30)).days + 1  # through today's open window
    # The environment still overrides it.
    monkeypatch.setenv(settings.START_DATE_ENV, "2026-02-20")
    assert window_start_date() == "2026-02-20"


def test_the_code_location_loads_with_the_default_start_without_a_warehouse(tmp_path):
    missing = tmp_path / "nowhere" / "warehouse.db"
    assert _load_partitions(f"sqlite:///{missing}")[0] == settings.DEFAULT_WINDOW_START_DATE
    assert not missing.parent.exists()
