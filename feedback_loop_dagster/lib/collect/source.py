"""The source table, `hook_executions`: every question the loop asks of it, in one place.

The source is the team's table, or a view over it, possibly in another database and with columns
typed otherwise than the contract (DESIGN.md section 2). So it is read by its raw column names over
a bare `sa.table`, never through the warehouse's `tables.hook_executions` (whose types would make
SQLAlchemy convert, and fail on, malformed values); only the bounds on `started_at` are bound with
the contract's timestamp type, so both dialects compare them as timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import NoSuchTableError

from feedback_loop_dagster.lib.settings import SOURCE_TABLE
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import StorageError, redact

# The contract's columns, in the contract's order.
SOURCE_COLUMNS = tuple(c.name for c in tables.hook_executions.columns)
_TIMESTAMP = tables.hook_executions.c.started_at.type


def column(name: str) -> sa.ColumnElement:
    """A source column by its raw name."""
    return sa.literal_column(f'"{name}"')


def relation(columns: Sequence[str] = ()) -> sa.TableClause:
    """The source table, with `columns` addressable as `.c[name]`."""
    return sa.table(SOURCE_TABLE, *(sa.column(c) for c in columns))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def _started_between(lo: datetime | None, hi: datetime) -> sa.ColumnElement:
    """`lo <= started_at < hi` (no lower bound when `lo` is None)."""
    started = column("started_at")
    clauses = [started < sa.bindparam("hi", hi, type_=_TIMESTAMP)]
    if lo is not None:
        clauses.append(started >= sa.bindparam("lo", lo, type_=_TIMESTAMP))
    return sa.and_(*clauses)


# --- what the source holds --------------------------------------------------------------------


def source_columns(source: Engine) -> list[str]:
    """The contract columns the source has; a clear error when the table or a required column is missing."""
    try:
        present = {c["name"] for c in sa.inspect(source).get_columns(SOURCE_TABLE)}
    except NoSuchTableError:
        raise StorageError(
            f"source table {SOURCE_TABLE!r} not found in {redact(str(source.url))}: run `feedback-loop init-db` "
            "or point FEEDBACK_LOOP_SOURCE_URL at the database that has it (a view with the same columns works)"
        ) from None
    missing = [c for c in tables.REQUIRED_SOURCE_COLUMNS if c not in present]
    if missing:
        raise StorageError(f"source table {SOURCE_TABLE!r} is missing required column(s): {', '.join(missing)}")
    return [c for c in SOURCE_COLUMNS if c in present]


def column_types(source: Engine) -> dict[str, sa.types.TypeEngine]:
    """Each source column's type as the database declares it (a view's columns too)."""
    return {found["name"]: found["type"] for found in sa.inspect(source).get_columns(SOURCE_TABLE)}


def unique_execution_ids(source: Engine) -> bool:
    """Whether the source itself refuses a repeated execution_id (then no row can be a duplicate)."""
    inspector = sa.inspect(source)
    try:
        constraints = inspector.get_unique_constraints(SOURCE_TABLE)
        indexes = inspector.get_indexes(SOURCE_TABLE)
        primary = inspector.get_pk_constraint(SOURCE_TABLE)
    except NoSuchTableError:
        return False
    unique = [c["column_names"] for c in constraints]
    unique += [i["column_names"] for i in indexes if i.get("unique")]
    unique.append(primary.get("constrained_columns") or [])
    return ["execution_id"] in unique


# --- queries ----------------------------------------------------------------------------------


def rows_query(columns: Sequence[str], pattern_ids: Sequence[str], first: date, last: date) -> sa.Select:
    """The `columns` of the patterns' executions started in windows [first, last], in seq order."""
    return (
        sa.select(*(column(c) for c in columns))
        .select_from(relation())
        .where(column("pattern_id").in_(pattern_ids), _started_between(_midnight(first), _midnight(last + timedelta(days=1))))
        .order_by(column("seq"))
    )


def unseen_rows_query(high_water: int, gaps: Sequence[tuple[int, int]], limit: int) -> sa.Select:
    """(seq, pattern_id, started_at) of the first `limit` rows above `high_water` or in `gaps`
    (inclusive seq ranges), in seq order."""
    seq = column("seq")
    unseen = sa.or_(seq > high_water, *(seq.between(a, b) for a, b in gaps))
    return (
        sa.select(seq, column("pattern_id"), column("started_at"))
        .select_from(relation())
        .where(unseen)
        .order_by(seq)
        .limit(limit)
    )


def pattern_ids(source: Engine) -> list[str]:
    """Every pattern id with executions, sorted (checks the table first: a clear error if absent)."""
    source_columns(source)
    with source.connect() as conn:
        found = conn.scalars(sa.select(column("pattern_id")).select_from(relation()).distinct()).all()
    return sorted(i for i in found if i)


def has_pattern(source: Engine, pattern_id: str) -> bool:
    """Whether the source has an execution of the pattern (False when it has no table yet)."""
    if not sa.inspect(source).has_table(SOURCE_TABLE):
        return False
    query = sa.select(column("pattern_id")).select_from(relation()).where(column("pattern_id") == pattern_id).limit(1)
    with source.connect() as conn:
        return conn.scalar(query) is not None


def earliest_starts(source: Engine) -> list:
    """The earliest `started_at` of each pattern, as stored (the (pattern_id, started_at) index answers it)."""
    query = sa.select(sa.func.min(column("started_at"))).select_from(relation()).group_by(column("pattern_id"))
    with source.connect() as conn:
        return conn.scalars(query).all()


def latest_day_with_executions(source: Engine, pattern_id: str, before: date) -> date | None:
    """The newest UTC day before `before` with executions of the pattern (None: it has none)."""
    query = (
        sa.select(sa.func.max(column("started_at")))
        .select_from(relation())
        .where(column("pattern_id") == sa.bindparam("p", pattern_id), _started_between(None, _midnight(before)))
    )
    with source.connect() as conn:
        latest = conn.scalar(query)
    if latest is None:
        return None
    import pandas as pd  # here, not at the top: the CLI imports this module for every command

    stamp = pd.Timestamp(latest)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC")
    return stamp.date()


def count_executions(source: Engine, pattern_id: str, first: date, last: date) -> int:
    """Executions of the pattern started in windows [first, last], valid or not."""
    query = (
        sa.select(sa.func.count())
        .select_from(relation())
        .where(
            column("pattern_id") == sa.bindparam("p", pattern_id),
            _started_between(_midnight(first), _midnight(last + timedelta(days=1))),
        )
    )
    with source.connect() as conn:
        return int(conn.scalar(query))
