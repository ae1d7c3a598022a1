"""The one place the core reads the wall clock.

Every function that needs "now" or "today" takes it as a parameter and falls back to these, so
a simulation replaying past days (the demo, tests, the Dagster layer's clock) passes its own
moment and nothing below reads the real clock behind its back.
"""

from __future__ import annotations

from datetime import UTC, date, datetime


def utc_now() -> datetime:
    """The real clock, in UTC."""
    return datetime.now(UTC)


def utc_today() -> date:
    """The UTC day of the real clock: the daily window open now."""
    return utc_now().date()
