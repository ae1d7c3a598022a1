"""Shared fixtures: every database test runs on SQLite; those where the SQL dialect matters
(storage, COPY, the collector's SQL, locking, concurrency, migrations; marker `both_dialects` on the
test or its module) run on a real PostgreSQL as well.

PostgreSQL comes from FEEDBACK_LOOP_TEST_POSTGRES_URL (an admin URL, e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/postgres), else the local default; when none
answers the suite tries to start the local cluster. Without one, PostgreSQL tests are skipped
loudly, except under CI=true or FEEDBACK_LOOP_REQUIRE_POSTGRES=1, where they fail.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa

from feedback_loop_dagster.lib import settings
from feedback_loop_dagster.lib.storage.database import dispose_engine, get_engine
from feedback_loop_dagster.lib.storage.migrations import init_databases
from feedback_loop_dagster_tests.integration.harness import create_database, drop_database
from feedback_loop_dagster_tests.processes import CEILING_SECONDS

# SQLite commits (the warehouses, Dagster's instance storage: one fsync or more per event) wait on
# the disk, ~4 ms per fsync on the CI machine; no test is about surviving a power cut, so the
# session's files, and its subprocesses', live on a RAM-backed folder where there is one.
_RAM_FOLDER = "/dev/shm"
if os.path.isdir(_RAM_FOLDER) and os.access(_RAM_FOLDER, os.W_OK):
    os.environ["TMPDIR"] = _RAM_FOLDER
    tempfile.tempdir = _RAM_FOLDER

# The suite never reads the developer's databases: the code location loads with the project's
# defaults (its partitions start where the default warehouse's recorded first day says, see
# lib/partition_start.py), so the default data folder is an empty one of the session's own.
_TEST_DATA_DIR = tempfile.mkdtemp(prefix="fld-test-data-")
atexit.register(shutil.rmtree, _TEST_DATA_DIR, ignore_errors=True)
os.environ[settings.DATA_DIR_ENV] = _TEST_DATA_DIR
for _name in (settings.DATABASE_URL_ENV, settings.SOURCE_URL_ENV, settings.START_DATE_ENV):
    os.environ.pop(_name, None)
# Nor the developer's Dagster instance (`make test` exports DAGSTER_HOME=.dagster_home): whatever runs
# in-process without a home of its own gets the session's, one per pytest-xdist worker.
os.environ["DAGSTER_HOME"] = os.path.join(_TEST_DATA_DIR, "dagster_home")
os.makedirs(os.environ["DAGSTER_HOME"])

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
_postgres_state: dict[str, str | None] = {}


def _postgres_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("FEEDBACK_LOOP_REQUIRE_POSTGRES") == "1"


def _try_connect(url: str) -> str | None:
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # any failure means "not usable here"; the reason is reported
        return str(exc).splitlines()[0]


def _start_local_cluster() -> None:
    if not shutil.which("pg_ctlcluster") or not Path("/etc/postgresql").is_dir():
        return
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
        capture_output=True,
        timeout=CEILING_SECONDS,
        check=False,
    )
    time.sleep(2)


def postgres_admin_url() -> str:
    """The admin URL, or pytest.skip/fail with the reason it is unusable."""
    if "url" not in _postgres_state:
        url = os.environ.get("FEEDBACK_LOOP_TEST_POSTGRES_URL") or DEFAULT_ADMIN_URL
        error = _try_connect(url)
        if error:
            _start_local_cluster()
            error = _try_connect(url)
        _postgres_state.update(url=url, error=error)
        if error:
            warnings.warn(f"PostgreSQL tests cannot run: {error}", stacklevel=1)
    if _postgres_state["error"]:
        message = f"PostgreSQL at {_postgres_state['url']} is not usable: {_postgres_state['error']}"
        if _postgres_required():
            pytest.fail(message + " (required: CI=true or FEEDBACK_LOOP_REQUIRE_POSTGRES=1)")
        pytest.skip(message)
    return _postgres_state["url"]


def create_postgres_database() -> str:
    """A fresh database whose commits do not wait for the WAL's flush (no test crashes this server)."""
    return create_database(postgres_admin_url(), "fld_test", durable_commits=False)


def drop_postgres_database(url: str) -> None:
    drop_database(postgres_admin_url(), url)


def pytest_generate_tests(metafunc):
    """`database_url` (and what builds on it) is SQLite, and PostgreSQL too under `both_dialects`:
    the PostgreSQL copy of a test pays only where the dialect can change the outcome."""
    if "database_url" in metafunc.fixturenames:
        kinds = ["sqlite"]
        if metafunc.definition.get_closest_marker("both_dialects"):
            kinds.append(pytest.param("postgresql", marks=pytest.mark.postgres))
        metafunc.parametrize("database_url", kinds, indirect=True)


def pytest_collection_modifyitems(items):
    """Every integration test (daemon, webserver, browser) is end to end; the end-to-end tests, the
    longest by far, run first, so that pytest-xdist's workers share them out and finish together
    instead of one worker starting a five-minute test while the other runs out of work. (`make test`
    hands out whole modules in this order, `--dist loadscope --no-loadscope-reorder`, so that a
    module's shared deployment starts once.)"""
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)  # stable: same order otherwise


@pytest.fixture
def database_url(request, tmp_path) -> str:
    """A fresh, empty database of the kind the test is parametrised with, dropped afterwards."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
        yield url
        dispose_engine(url)
    else:
        url = create_postgres_database()
        yield url
        drop_postgres_database(url)


@pytest.fixture
def migrated_url(database_url) -> str:
    """A fresh database with the source table and the warehouse schema."""
    engine = get_engine(database_url)
    init_databases(engine, engine)
    return database_url


@pytest.fixture
def engine(migrated_url):
    return get_engine(migrated_url)


@pytest.fixture
def project_env(monkeypatch, migrated_url, tmp_path):
    """Environment that points the CLI and the code location at the test database and instance."""
    monkeypatch.setenv(settings.DATABASE_URL_ENV, migrated_url)
    monkeypatch.delenv(settings.SOURCE_URL_ENV, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return migrated_url


@pytest.fixture
def postgres_engine():
    """A fresh, migrated PostgreSQL database, for what only a real server shows (locks, crashes)."""
    url = create_postgres_database()
    engine = get_engine(url)
    init_databases(engine, engine)
    yield engine
    drop_postgres_database(url)
