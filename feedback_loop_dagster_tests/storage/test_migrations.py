"""Versioned migrations and database errors."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import StorageError, get_engine
from feedback_loop_dagster.lib.storage.migrations import (
    WAREHOUSE_MIGRATIONS,
    Migration,
    init_databases,
    migrate,
)
from feedback_loop_dagster_tests.factories import execution, insert_executions

# Migrations take an advisory lock and run DDL in a transaction on PostgreSQL only.
pytestmark = pytest.mark.both_dialects


def _versions(engine):
    with engine.connect() as conn:
        return conn.execute(
            sa.select(tables.schema_migrations.c.component, tables.schema_migrations.c.version)
        ).all()


def test_init_is_idempotent(database_url):
    engine = get_engine(database_url)
    first = init_databases(engine, engine)
    assert [m.version for m in first["warehouse"]] == [m.version for m in WAREHOUSE_MIGRATIONS]
    insert_executions(engine, [execution()])
    assert init_databases(engine, engine) == {"source": [], "warehouse": []}
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(tables.hook_executions)) == 1


def test_an_older_schema_is_migrated_forward_keeping_its_data(database_url):
    engine = get_engine(database_url)
    init_databases(engine, engine)
    insert_executions(engine, [execution()])

    def add_note_column(conn):
        if "note" not in {c["name"] for c in sa.inspect(conn).get_columns("feedback_partitions")}:
            conn.execute(sa.text("ALTER TABLE feedback_partitions ADD COLUMN note TEXT"))

    newer = (*WAREHOUSE_MIGRATIONS, Migration(len(WAREHOUSE_MIGRATIONS) + 1, "add note", add_note_column))
    assert [m.name for m in migrate(engine, "warehouse", newer)] == ["add note"]
    assert migrate(engine, "warehouse", newer) == []
    assert "note" in {c["name"] for c in sa.inspect(engine).get_columns("feedback_partitions")}
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(tables.hook_executions)) == 1


def test_a_failing_step_leaves_the_schema_as_it_was(database_url):
    engine = get_engine(database_url)

    def broken(conn):
        conn.execute(sa.text("CREATE TABLE half_written (x INTEGER)"))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        migrate(engine, "warehouse", (*WAREHOUSE_MIGRATIONS, Migration(99, "broken", broken)))
    assert not sa.inspect(engine).has_table("half_written")
    assert not sa.inspect(engine).has_table("feedback")
    assert not sa.inspect(engine).has_table("feedback_loop_migrations") or _versions(engine) == []


def test_a_newer_schema_than_the_code_is_refused(database_url):
    engine = get_engine(database_url)
    migrate(engine, "warehouse", (*WAREHOUSE_MIGRATIONS, Migration(99, "future", lambda conn: None)))
    with pytest.raises(StorageError, match="newer than this code"):
        migrate(engine, "warehouse", WAREHOUSE_MIGRATIONS)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "bad database URL"),
        ("mysql://localhost/x", "unsupported database"),
        ("postgresql+psycopg://nobody@127.0.0.1:1/none", "cannot connect to"),
    ],
)
def test_bad_urls_give_one_clear_error(url, message):
    with pytest.raises(StorageError, match=message):
        get_engine(url)
