"""A mechanistic truth model for the demo: what each pattern version *really* does.

The plain simulator (`simulator.executions`) draws independent random traffic. The demo needs
traffic that answers to the registry: a pattern's executions run whatever version the loop has
made active, or their arm of a running experiment, and their outcomes follow from that
version's config. So each pattern here has a base behaviour (`PatternTruth`) and the config
knobs act on it mechanically, execution by execution:

- latency is lognormal (`latency_median_ms`, `latency_sigma`); a call slower than `timeout_ms`
  ends as status `timeout` (TimeoutError) with duration = the timeout;
- a share `rate_limit_share` of calls hits RateLimitError on its first attempt; each of up to
  `max_retries` retries succeeds with probability `retry_success` and adds `retry_backoff_ms`;
  `retry_count` records the retries made, and a call whose retries all fail is a failure;
- with `cache_ttl_seconds > 0` a unit's repeated call (same unit, same day: units are sessions)
  may be served from the cache (`CacheEffect`): faster, and possibly stale (a stale answer
  fails validation, and a served one scores lower quality);
- a share `failure_rate` fails for reasons no knob addresses (ToolError, ValidationError);
- `degrade_after_promotion_days`: the version the loop promotes starts failing with
  UpstreamError (extra failure probability `degraded_failure`) that many days after its
  promotion: a change whose effect turns harmful once it carries the traffic.

Everything is drawn from random streams keyed by (seed, pattern, day index), with common random
numbers across versions (a call's latency, its rate-limit luck... do not depend on the version
it was routed to), so a run is reproducible whatever the calendar dates are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd

from feedback_loop_dagster.lib.stats import Policy, get_preset

# Retries drawn per call: more than any config here asks for.
MAX_RETRY_DRAWS = 8
RATING_SHARE = 0.3
# Rows the tracing gets wrong, so the quarantine has something to show: (column, bad value).
MALFORMED_SHARE = 0.005
MALFORMED_VALUES = (("status", "finished?"), ("duration_ms", -1.0), ("user_rating", 7.0), ("retry_count", -1))


@dataclass(frozen=True)
class CacheEffect:
    """What a response cache does to a unit's repeated call within a day."""

    hit_rate: float  # probability that a repeated call is served from the cache
    latency_factor: float = 1.0  # hit latency = factor x the uncached latency
    stale_failure: float = 0.0  # probability that a hit is stale and fails validation
    quality_drop: float = 0.0  # quality lost by a (non-failing) cached answer


@dataclass(frozen=True)
class PatternTruth:
    """One pattern of the demo: its base behaviour, its first version and policy, and what is planted."""

    pattern_id: str
    planted: str  # the truth in words, for the final table
    expected: str  # promoted | rejected | inconclusive | rolled back | no experiment
    policy: Policy
    config: dict[str, Any]  # v1, registered before the first day
    latency_median_ms: float = 800.0
    latency_sigma: float = 0.5
    failure_rate: float = 0.04  # failures no knob fixes
    rate_limit_share: float = 0.0
    retry_success: float = 0.5
    retry_backoff_ms: float = 150.0
    quality: tuple[float, float] = (8.0, 2.0)  # Beta(a, b) of a successful call's quality score
    # P(a unit makes 1, 2, 3, ... calls in a day); units are sessions, fresh every day.
    calls_per_unit: tuple[float, ...] = (1.0,)
    cache: CacheEffect | None = None
    degrade_after_promotion_days: int | None = None
    degraded_failure: float = 0.0


@dataclass(frozen=True)
class Routing:
    """Which version each unit of a day runs: `treatment` (bool per unit) picks between two."""

    control: str
    control_config: dict[str, Any]
    treatment: str | None = None
    treatment_config: dict[str, Any] | None = None
    in_treatment: np.ndarray | None = None
    degraded: frozenset[str] = field(default_factory=frozenset)  # versions degraded on this day


def demo_patterns() -> list[PatternTruth]:
    """The six patterns of `make demo`, each with one planted truth (ids include unsafe keys)."""
    reliability = get_preset("production", feedback_type="reliability", significance_level=0.01)
    performance = get_preset("production", feedback_type="performance", significance_level=0.01)
    return [
        PatternTruth(
            pattern_id="summarise-ticket",
            planted="timeouts cut 10% of calls; timeout_ms 1500 -> 3000 truly recovers most of them",
            expected="promoted",
            policy=reliability,
            config={"model": "small", "timeout_ms": 1500},
            latency_median_ms=700.0,
            latency_sigma=0.6,
            failure_rate=0.04,
        ),
        PatternTruth(
            pattern_id="agent|planner, v2",
            planted="25% of calls hit RateLimitError; max_retries 1 -> 3 truly turns most into successes",
            expected="promoted",
            # More retries (about +0.12 per call) is the point of this change; the default retries
            # margin (+0.25 per execution) accepts it as a trade-off for the successes.
            policy=reliability,
            config={"model": "large", "max_retries": 1},
            latency_median_ms=1200.0,
            latency_sigma=0.4,
            failure_rate=0.03,
            rate_limit_share=0.25,
            retry_success=0.65,
        ),
        PatternTruth(
            pattern_id="doc-search",
            planted="repeated queries, but answers are personalised: a cache never hits (truly neutral)",
            # Nothing to detect: the experiment runs its 14 days (the production preset's
            # max_experiment_days) and ends without a decision, keeping v1.
            expected="inconclusive",
            policy=performance,
            config={"index": "bm25", "cache_ttl_seconds": 0},
            latency_median_ms=600.0,
            latency_sigma=0.5,
            failure_rate=0.03,
            calls_per_unit=(0.8, 0.2),
            cache=CacheEffect(hit_rate=0.0),
        ),
        PatternTruth(
            pattern_id="résumé [draft]...",
            planted="a cache makes repeats 20x faster but serves stale drafts that fail validation (harmful)",
            expected="rejected",
            policy=performance,
            config={"template": "modern", "cache_ttl_seconds": 0},
            latency_median_ms=1500.0,
            latency_sigma=0.5,
            failure_rate=0.03,
            calls_per_unit=(0.6, 0.25, 0.15),
            cache=CacheEffect(hit_rate=0.9, latency_factor=0.05, stale_failure=0.8, quality_drop=0.2),
        ),
        PatternTruth(
            pattern_id="sql-generator",
            planted="timeout_ms 1500 -> 3000 truly helps, then fails upstream 3 days after its promotion",
            expected="rolled back",
            policy=reliability,
            config={"model": "small", "timeout_ms": 1500},
            latency_median_ms=700.0,
            latency_sigma=0.6,
            failure_rate=0.04,
            degrade_after_promotion_days=3,
            degraded_failure=0.4,
        ),
        PatternTruth(
            pattern_id="incident-triage",
            planted="timeouts as in summarise-ticket, under the monitoring preset (observe only)",
            expected="no experiment",
            policy=get_preset("monitoring", feedback_type="reliability"),
            config={"model": "small", "timeout_ms": 1500},
            latency_median_ms=700.0,
            latency_sigma=0.6,
            failure_rate=0.04,
        ),
    ]


def _units(truth: PatternTruth, index: int, day_index: int, per_day: int, rng: np.random.Generator):
    """Units (sessions) of the day and the unit and start time of each of `per_day` calls."""
    weights = np.asarray(truth.calls_per_unit, dtype=float)
    weights = weights / weights.sum()
    sizes = rng.choice(np.arange(1, len(weights) + 1), size=per_day, p=weights)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), per_day)) + 1]
    sizes[-1] -= int(sizes.sum()) - per_day
    unit_ids = np.array([f"u{index}-{day_index:03d}-{k:05d}" for k in range(len(sizes))], dtype=object)
    call_unit = np.repeat(np.arange(len(sizes)), sizes)
    # A session starts anywhere in the day; its later calls follow within minutes.
    session_start = rng.uniform(0, 86_000, len(sizes))
    order_in_session = np.concatenate([np.arange(s) for s in sizes])
    offsets = np.cumsum(np.where(order_in_session > 0, rng.exponential(120.0, per_day), 0.0))
    offsets -= np.repeat(np.concatenate([[0.0], offsets[np.cumsum(sizes)[:-1] - 1]]), sizes)
    seconds = np.minimum(session_start[call_unit] + offsets, 86_399.0)
    return unit_ids, call_unit, order_in_session, seconds


def _routed(routing, call_unit: np.ndarray, n: int):
    """Per call: the version it runs and that version's knobs (timeout, retries, cache), and
    whether its version is degraded."""
    treated = np.zeros(n, dtype=bool) if routing.in_treatment is None else routing.in_treatment[call_unit]
    version = np.where(treated, routing.treatment or "", routing.control).astype(object)

    def knob(name: str, default: float) -> np.ndarray:
        control = routing.control_config.get(name, default)
        treatment = (routing.treatment_config or {}).get(name, default)
        return np.where(treated, treatment, control).astype(float)

    degraded = np.array([v in routing.degraded for v in version], dtype=bool)
    return version, knob("timeout_ms", np.inf), knob("max_retries", 0).astype(int), knob("cache_ttl_seconds", 0) > 0, degraded


def _retried(rate_limited: np.ndarray, max_retries: np.ndarray, u_retry: np.ndarray, retry_success: float):
    """Retries of rate-limited calls up to each call's `max_retries`: (still failing, retries)."""
    still_failing = rate_limited.copy()
    retries = np.zeros(len(rate_limited), dtype=int)
    for k in range(MAX_RETRY_DRAWS):
        attempt = still_failing & (max_retries > k)
        retries += attempt
        still_failing &= ~(attempt & (u_retry[k] < retry_success))
    return still_failing, retries


def _outcomes(causes, n: int):
    """Status, error type and message per call: success unless a cause's mask holds; a later
    cause overrides an earlier one."""
    status = np.full(n, "success", dtype=object)
    error_type = np.full(n, None, dtype=object)
    message = np.full(n, None, dtype=object)
    for mask, st, error, text in causes:
        status[mask], error_type[mask], message[mask] = st, error, text
    return status, error_type, message


def _day_frame(pattern_id: str, index: int, day: date, day_index: int, version: np.ndarray, seconds: np.ndarray,
               duration: np.ndarray, outcome: dict[str, np.ndarray]) -> pd.DataFrame:
    """The day's calls in the source's columns: ids, version, start (`seconds` into the day),
    end and duration, then `outcome`'s columns."""
    start_of_day = datetime.combine(day, time.min, UTC)
    started = pd.to_datetime(start_of_day) + pd.to_timedelta(np.round(seconds, 3), unit="s")
    return pd.DataFrame(
        {
            "execution_id": [f"demo-{index}-{day_index:03d}-{i:05d}" for i in range(len(version))],
            "pattern_id": pattern_id,
            "pattern_version": version,
            "started_at": started,
            "completed_at": started + pd.to_timedelta(np.round(duration, 3), unit="ms"),
            "duration_ms": np.round(duration, 3),
            **outcome,
        }
    )


def simulate_day(
    truth: PatternTruth,
    index: int,
    day: date,
    day_index: int,
    per_day: int,
    seed: int,
    route,
    malformed_share: float = MALFORMED_SHARE,
) -> pd.DataFrame:
    """One day of `truth`'s executions (source-table columns, no `seq`).

    `route(unit_ids) -> Routing` says which version each unit runs (the registry's answer).
    A share `malformed_share` of rows gets one bad value each (MALFORMED_VALUES), drawn from a
    stream of their own so the other draws do not depend on it.
    """
    rng = np.random.default_rng([seed, index, day_index])
    unit_ids, call_unit, order_in_session, seconds = _units(truth, index, day_index, per_day, rng)
    n = per_day
    # Common random numbers: the same draws whatever version a call is routed to.
    z_latency = rng.standard_normal(n)
    u_rate_limit = rng.random(n)
    u_retry = rng.random((MAX_RETRY_DRAWS, n))
    u_fail = rng.random(n)
    fail_kind = rng.random(n)
    u_cache = rng.random(n)
    u_stale = rng.random(n)
    u_degraded = rng.random(n)
    quality = rng.beta(*truth.quality, n)
    u_rating = rng.random(n)
    rating_noise = rng.normal(0.0, 0.08, n)

    version, timeout_ms, max_retries, cache_on, degraded = _routed(route(unit_ids), call_unit, n)

    latency = truth.latency_median_ms * np.exp(truth.latency_sigma * z_latency)
    cache = truth.cache or CacheEffect(hit_rate=0.0)
    hit = cache_on & (order_in_session > 0) & (u_cache < cache.hit_rate)  # a repeat call in a session
    latency = np.where(hit, latency * cache.latency_factor, latency)

    rate_limited = ~hit & (u_rate_limit < truth.rate_limit_share)
    still_failing, retries = _retried(rate_limited, max_retries, u_retry, truth.retry_success)
    latency = latency + retries * truth.retry_backoff_ms

    timed_out = latency > timeout_ms
    duration = np.where(timed_out, timeout_ms, latency)
    stale = hit & (u_stale < cache.stale_failure)
    upstream = degraded & (u_degraded < truth.degraded_failure)
    other = u_fail < truth.failure_rate

    status, error_type, message = _outcomes(
        (
            (other & (fail_kind >= 0.5), "error", "ValidationError", "output failed schema validation"),
            (other & (fail_kind < 0.5), "failure", "ToolError", "tool 'search' returned HTTP 502"),
            (stale, "failure", "StaleResultError", "cached answer no longer matches the input"),
            (upstream, "error", "UpstreamError", "upstream connection pool exhausted"),
            (still_failing, "failure", "RateLimitError", "429 Too Many Requests after retries"),
            (timed_out, "timeout", "TimeoutError", "execution exceeded timeout_ms"),
        ),
        n,
    )
    success = status == "success"
    quality = np.clip(np.where(hit, quality - cache.quality_drop, quality), 0.0, 1.0)
    quality_score = np.where(success, quality, np.nan)
    rated = u_rating < RATING_SHARE
    rating = np.clip(np.where(success, quality + rating_noise, 0.15 + rating_noise), 0.0, 1.0)

    frame = _day_frame(
        truth.pattern_id, index, day, day_index, version, seconds, duration,
        {
            "status": status,
            "quality_score": quality_score,
            "user_rating": np.where(rated, rating, np.nan),
            "retry_count": retries,
            "error_type": error_type,
            "error_message": message,
            "unit_id": unit_ids[call_unit],
        },
    )
    _corrupt(frame, malformed_share, np.random.default_rng([seed, index, day_index, 1]))
    return frame.sort_values("started_at", kind="stable").reset_index(drop=True)


def _corrupt(frame: pd.DataFrame, share: float, rng: np.random.Generator) -> None:
    bad = rng.permutation(len(frame))[: int(round(share * len(frame)))]
    for k, (column, value) in enumerate(MALFORMED_VALUES):
        rows = bad[k :: len(MALFORMED_VALUES)]
        if column == "status":
            frame[column] = frame[column].astype(object)
        frame.loc[rows, column] = value


def window_days(days: int, end: date | None = None) -> list[date]:
    """The `days` UTC days ending at `end` (default: yesterday, so every window is complete)."""
    last = end or (datetime.now(UTC).date() - timedelta(days=1))
    return [last - timedelta(days=days - 1 - i) for i in range(days)]
