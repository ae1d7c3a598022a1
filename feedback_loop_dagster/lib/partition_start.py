"""Where the daily partitions start: the first day with data, recorded in the warehouse.

A fixed start (2025-01-01) made a new user's partition bars mostly empty: 4,206 partitions for
126 with data. So `init-db`, `patterns sync`, `simulate` and the demo record the UTC day of the
earliest execution in the source (`record_earliest_window`), and the code location's
`DailyPartitionsDefinition` starts there (`window_start_date`, read when it loads).

The recorded day only ever moves earlier: partitions that exist keep existing, and older history
loaded later widens the range (after the code location reloads). FEEDBACK_LOOP_START_DATE still
overrides it. Reading it never fails the code location's load: a warehouse that is missing,
empty, not migrated yet or unreachable gives None, and the default start applies.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from feedback_loop_dagster.lib import settings
from feedback_loop_dagster.lib.collect.source import earliest_starts
from feedback_loop_dagster.lib.errors import ConfigError

log = logging.getLogger(__name__)
FIRST_WINDOW = "first_window"


def earliest_window(source: Engine) -> date | None:
    """The UTC day of the earliest parseable `started_at` in the source (None: no executions).

    The minimum is taken per pattern, which the (pattern_id, started_at) index answers, and the
    per-pattern minima are parsed as the collector parses them (a view or text column works)."""
    import pandas as pd  # here, not at the top: the CLI imports this module for every command

    minima = earliest_starts(source)
    parsed = pd.to_datetime(pd.Series(minima, dtype=object), errors="coerce", utc=True, format="ISO8601").dropna()
    return None if parsed.empty else parsed.min().date()


def record_first_window(warehouse: Engine, day: date) -> date:
    """Records `day` as the first window unless an earlier one is recorded; returns the recorded day."""
    from sqlalchemy.dialects import postgresql, sqlite

    from feedback_loop_dagster.lib.storage.database import is_postgres
    from feedback_loop_dagster.lib.storage.tables import loop_settings as ls

    dialect = postgresql if is_postgres(warehouse) else sqlite
    insert = dialect.insert(ls).values(name=FIRST_WINDOW, value=day.isoformat(), updated_at=datetime.now(UTC))
    # ISO dates order as text; the smaller one wins, whichever writer comes second.
    earlier = sa.case((insert.excluded.value < ls.c.value, insert.excluded.value), else_=ls.c.value)
    with warehouse.begin() as conn:
        conn.execute(insert.on_conflict_do_update(index_elements=[ls.c.name], set_={"value": earlier}))
        return date.fromisoformat(conn.scalar(sa.select(ls.c.value).where(ls.c.name == FIRST_WINDOW)))


def record_earliest_window(warehouse: Engine, source: Engine) -> date | None:
    """Records the source's earliest day (see `record_first_window`); None when it has no
    executions, or the warehouse is not migrated yet (`init-db` records it then)."""
    from feedback_loop_dagster.lib.storage.tables import loop_settings

    if not sa.inspect(warehouse).has_table(loop_settings.name):
        return None
    day = earliest_window(source)
    return None if day is None else record_first_window(warehouse, day)


def recorded_first_window(database_url: str) -> date | None:
    """The first window recorded in the warehouse at `database_url`, or None (nothing recorded, or
    no usable warehouse: a SQLite file that does not exist is not created, an unreachable server is
    logged)."""
    from feedback_loop_dagster.lib.storage.database import StorageError, get_engine
    from feedback_loop_dagster.lib.storage.tables import loop_settings as ls

    try:
        parsed = make_url(database_url)
    except sa.exc.ArgumentError:
        return None  # reported where the warehouse is used
    if parsed.get_backend_name() == "sqlite" and not (parsed.database and Path(parsed.database).is_file()):
        return None
    try:
        engine = get_engine(database_url)
        if not sa.inspect(engine).has_table(ls.name):
            return None
        with engine.connect() as conn:
            value = conn.scalar(sa.select(ls.c.value).where(ls.c.name == FIRST_WINDOW))
    except (StorageError, sa.exc.SQLAlchemyError) as exc:
        log.warning("cannot read the first window from the warehouse (%s); partitions use the default start", exc)
        return None
    return date.fromisoformat(value) if value else None


def window_start_date() -> str:
    """The first daily window: FEEDBACK_LOOP_START_DATE when set (validated here, so a typo fails at
    load time with a clear message), else the first day with data recorded in the warehouse by
    `init-db`, `patterns sync`, `simulate` or the demo, else the default."""
    raw = os.environ.get(settings.START_DATE_ENV)
    if not raw:
        recorded = recorded_first_window(settings.database_url())
        return recorded.isoformat() if recorded else settings.DEFAULT_WINDOW_START_DATE
    try:
        date.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"{settings.START_DATE_ENV}={raw!r} is not a date in YYYY-MM-DD form") from None
    return raw
