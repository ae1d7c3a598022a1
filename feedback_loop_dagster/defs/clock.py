"""The moment a run acts at: the real clock, or a simulated one for replays of past days.

An experiment (and a post-promotion watch) never starts on a window that is already complete
when it is created: its executions ran without the experiment's split. So the assets that start
them (`experiments`, `applied_improvements`) need "now". It is the real clock unless a simulation
replaying past days (the demo, tests) sets `now` in their run config, with `clock_run_config`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

import dagster as dg
from pydantic import Field, field_validator

# The assets whose decisions depend on the clock.
CLOCKED_ASSETS = ("experiments", "applied_improvements")


def parse_now(value: str) -> datetime:
    """An ISO-8601 timestamp or date as an aware UTC datetime (naive values are UTC)."""
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class LoopClockConfig(dg.Config):
    now: str | None = Field(
        default=None,
        description=(
            "The clock experiments start by, as an ISO-8601 UTC timestamp or date; default (null): "
            "the real clock. An experiment never starts on a window already complete at this "
            "moment. Only simulations replaying past days (the demo, tests) set it, to the "
            "simulated moment, e.g. the midnight after the window being run."
        ),
    )

    @field_validator("now")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        if value is not None:
            parse_now(value)
        return value

    def simulated_now(self) -> datetime | None:
        """The configured moment, or None: read the real clock when each experiment is created."""
        return None if self.now is None else parse_now(self.now)


def midnight_after(day: date) -> datetime:
    """The moment `day`'s window closes (UTC): when a run over that window happens at the earliest."""
    return datetime.combine(day + timedelta(days=1), time.min, UTC)


def clock_run_config(
    now: datetime | None, run_config: dict | None = None, selection: Iterable[str] | None = None
) -> dict:
    """`run_config` with `now` given to every clocked asset of the run (`selection`: the names
    of the assets it materialises, default all); None leaves it unchanged (the real clock)."""
    config = dict(run_config or {})
    if now is None:
        return config
    ops = dict(config.get("ops", {}))
    for name in CLOCKED_ASSETS if selection is None else set(CLOCKED_ASSETS) & set(selection):
        ops[name] = {"config": {"now": now.isoformat()}}
    return {**config, "ops": ops}
