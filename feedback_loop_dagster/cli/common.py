"""What every command group shares: days, the databases and the Dagster instance, the pattern a
name means, and how tables and JSON are printed."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import click

from feedback_loop_dagster.lib import settings
from feedback_loop_dagster.lib.clock import utc_today
from feedback_loop_dagster.lib.storage.database import get_engine


class Day(click.ParamType):
    """A UTC day: YYYY-MM-DD, `today`, `yesterday` or `today-N` (N days ago)."""

    name = "day"

    def convert(self, value, param, ctx):
        if isinstance(value, date):
            return value
        text = str(value).strip().lower()
        today = utc_today()
        if text == "today":
            return today
        if text == "yesterday":
            return today - timedelta(days=1)
        if text.startswith("today-") and text[6:].isdigit():
            return today - timedelta(days=int(text[6:]))
        try:
            return date.fromisoformat(text)
        except ValueError:
            self.fail(f"{value!r} is not a day: use YYYY-MM-DD, today, yesterday or today-N", param, ctx)

    def get_metavar(self, param, ctx=None):
        return "DAY"


DATE = Day()


def warehouse_engine():
    return get_engine(settings.database_url())


def source_engine():
    return get_engine(settings.source_url())


def engines():
    """(warehouse, source)."""
    return warehouse_engine(), source_engine()


def dagster_instance():
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(settings.dagster_home())
    return dg.DagsterInstance.get()


def user_name(value: str | None) -> str:
    if value:
        return value
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:  # no user name in a container: still say who did it
        return "cli"


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) >= 1 else f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)  # display text, not a stored document
    return str(value)


def echo_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, empty: str = "(none)", cut: int | None = 60
) -> None:
    """A plain aligned table; long cells are cut at `cut` characters (None: never)."""
    if not rows:
        click.echo(empty)
        return
    columns = list(columns or rows[0].keys())
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    if cut is not None:
        cells = [[c if len(c) <= cut else c[: cut - 3] + "..." for c in row] for row in cells]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))  # --json output, not a stored document


def ensure_warehouse() -> None:
    """A clear error instead of a SQL one when `feedback-loop init-db` has not been run."""
    import sqlalchemy as sa

    from feedback_loop_dagster.lib.storage.database import StorageError

    engine = warehouse_engine()
    if not sa.inspect(engine).has_table("pattern_versions"):
        where = engine.url.render_as_string(hide_password=True)
        raise StorageError(f"the warehouse at {where} has no loop tables: run `feedback-loop init-db`")


def pattern_named(name: str, create: bool = False) -> str:
    """The original id of the pattern NAME names (its id or its partition key); with `create`, an
    unknown NAME is a new pattern's id (`register_pattern` it once its first change is written).
    One rule for every command (lib/operator_actions/patterns.py)."""
    from feedback_loop_dagster.lib.operator_actions.patterns import resolve_pattern

    ensure_warehouse()
    return resolve_pattern(warehouse_engine(), name, source=source_engine(), create=create)


def register_pattern(pattern_id: str) -> None:
    """List the pattern in the registry (`patterns list`) with its partition key (idempotent)."""
    from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids

    register_pattern_ids(warehouse_engine(), [pattern_id])
