"""Engines for the warehouse and the source, with clear errors for bad URLs and unreachable servers."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from feedback_loop_dagster.lib.errors import UserError


class StorageError(UserError, RuntimeError):
    """A database cannot be used as configured; the message says what is wrong and where."""


SUPPORTED_BACKENDS = ("sqlite", "postgresql")


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(url: str) -> Engine:
    """One pooled engine per URL and process; checks the URL and that the server answers."""
    with _engines_lock:
        if url not in _engines:
            _engines[url] = _create_engine(url)
        return _engines[url]


def dispose_engine(url: str) -> None:
    """Close the pooled connections of `url` (before dropping its database, or at shutdown)."""
    with _engines_lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


def _create_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(
            f"bad database URL {url!r}: expected e.g. sqlite:///path/to.db or "
            "postgresql+psycopg://user@host:5432/dbname"
        ) from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise StorageError(
            f"unsupported database in URL {redact(url)!r}: use one of {', '.join(SUPPORTED_BACKENDS)}"
        )
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        # psycopg 3 is the driver we install and the one with COPY support used for bulk writes.
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite_engine(parsed)
        else:
            engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    except NoSuchModuleError:
        raise StorageError(f"no driver for database URL {redact(url)!r}") from None
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:  # no server, no such database, a file that is not a database, ...
        engine.dispose()
        raise StorageError(f"cannot connect to {redact(url)}: {exc.orig}") from None
    return engine


def _sqlite_engine(parsed: sa.URL) -> Engine:
    if parsed.database and parsed.database != ":memory:":
        folder = Path(parsed.database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocking = next((p for p in (folder, *folder.parents) if p.exists()), folder)
            why = (f"{blocking} is a file, not a folder" if not blocking.is_dir()
                   else f"cannot create folder {exc.filename} ({exc.strerror})")
            raise StorageError(f"cannot create SQLite database {parsed.database!r}: {why}") from None
    engine = sa.create_engine(parsed, connect_args={"timeout": 60})

    # pysqlite commits implicitly before DDL; this SQLAlchemy-documented recipe hands transaction
    # control back to SQLAlchemy so migrations and partition rewrites are really atomic.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL lets the sensor read while a run writes; busy_timeout waits instead of failing.
        cursor.execute("PRAGMA journal_mode=WAL")
        # SQLite's advice for WAL: a commit survives a crash of any process, and the file stays
        # consistent through a power cut, which may only take back the last commits; FULL would add
        # an fsync to every commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN")

    return engine


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
