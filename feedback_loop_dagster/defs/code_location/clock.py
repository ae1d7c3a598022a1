"""The moment a run acts at: the real clock, or a simulated one for replays of past days.

An experiment (and a post-promotion watch) never starts on a window that is already complete
when it is created: its executions ran without the experiment's split. So the assets that start
them (`experiments`, `applied_improvements`) take the `clock` resource. It is the real clock unless
a simulation replaying past days (the demo, the Python API's `now`, tests) sets it: bound
when the definitions are built (`build_definitions(clock=...)`), or for one run through the
resource's run config (`clock_run_config`), which reaches every asset that uses the clock.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import dagster as dg
from pydantic import Field, field_validator

# The resource key the clocked assets ask for (`clock: LoopClock`).
CLOCK_RESOURCE = "clock"


def parse_now(value: str) -> datetime:
    """An ISO-8601 timestamp or date as an aware UTC datetime (naive values are UTC)."""
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class LoopClock(dg.ConfigurableResource):
    """The clock experiments start by."""

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

    @classmethod
    def at(cls, now: datetime | None) -> LoopClock:
        """The clock stopped at `now`; None: the real clock."""
        return cls(now=None if now is None else now.isoformat())

    def simulated_now(self) -> datetime | None:
        """The configured moment, or None: read the real clock when each experiment is created."""
        return None if self.now is None else parse_now(self.now)


def midnight_after(day: date) -> datetime:
    """The moment `day`'s window closes (UTC): when a run over that window happens at the earliest."""
    return datetime.combine(day + timedelta(days=1), time.min, UTC)


def clock_run_config(now: datetime | None, run_config: dict | None = None) -> dict:
    """`run_config` with the clock resource set to `now` for that run; None leaves it unchanged
    (the clock the definitions were built with)."""
    config = dict(run_config or {})
    if now is None:
        return config
    resources = {**config.get("resources", {}), CLOCK_RESOURCE: {"config": {"now": now.isoformat()}}}
    return {**config, "resources": resources}
