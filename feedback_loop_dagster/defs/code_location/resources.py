"""Resources: the warehouse and source databases."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field
from sqlalchemy.engine import Engine

from feedback_loop_dagster.lib import settings
from feedback_loop_dagster.lib.storage.database import get_engine


class FeedbackDatabases(dg.ConfigurableResource):
    """SQLAlchemy URLs of the warehouse and of the database holding `hook_executions`.

    `source_url` defaults to the warehouse; both default to a SQLite file in the project's data
    folder, so the code location runs on a bare machine.
    """

    database_url: str = Field(description="SQLAlchemy URL of the warehouse database.")
    source_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the database with hook_executions (default: the warehouse)."
    )

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
