"""Resources: the warehouse and source databases (and the run's own Dagster connections)."""

from __future__ import annotations

import os
import weakref

import dagster as dg
from pydantic import Field
from sqlalchemy.engine import Engine

from feedback_loop_dagster.lib import settings
from feedback_loop_dagster.lib.storage.database import get_engine

_POOLED: weakref.WeakSet[dg.DagsterInstance] = weakref.WeakSet()


def keep_instance_connections(instance: dg.DagsterInstance) -> None:
    """Lets `instance` keep its database connections open across queries, as the webserver's does.

    dagster-postgres otherwise opens a connection per query (about 7 ms each here, a PostgreSQL
    backend started each time): a range run of 1,000 partitions stores 1,000 check results at about
    three connections each; two run workers opened about 160 connections a second. No-op on SQLite and
    in-memory instances; once per instance."""
    if instance in _POOLED:
        return
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=10)
    _POOLED.add(instance)


class FeedbackDatabases(dg.ConfigurableResource):
    """SQLAlchemy URLs of the warehouse and of the database holding `hook_executions`.

    `source_url` defaults to the warehouse; both default to a SQLite file in the project's data
    folder, so the code location runs on a bare machine.
    """

    database_url: str = Field(description="SQLAlchemy URL of the warehouse database.")
    source_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the database with hook_executions (default: the warehouse)."
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Every asset of a run needs this resource, so here the run (a run worker the daemon
        # launched, or a CLI's in-process run) gets to keep its Dagster connections.
        if context.instance is not None:
            keep_instance_connections(context.instance)

    @property
    def warehouse(self) -> Engine:
        return get_engine(self.database_url)

    @property
    def source(self) -> Engine:
        return get_engine(self.source_url or self.database_url)


def databases_from_environment() -> FeedbackDatabases:
    """EnvVar where the variable is set (so the UI shows where a value comes from), defaults otherwise."""

    def value(name: str, default: str | None) -> str | dg.EnvVar | None:
        return dg.EnvVar(name) if os.environ.get(name) else default

    return FeedbackDatabases(
        database_url=value(settings.DATABASE_URL_ENV, settings.default_database_url()),
        source_url=value(settings.SOURCE_URL_ENV, None),
    )
