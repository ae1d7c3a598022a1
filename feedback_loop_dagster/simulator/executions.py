"""Realistic, deterministic pattern executions for the source table (a demo and test tool).

Nothing here touches a database: `simulate_rows` returns a whole simulation as a DataFrame and
`iter_simulated_chunks` yields it chunk by chunk; `simulator.write` puts either into a source.

Shape of a simulation (`SimulationConfig`): `patterns` patterns, each with exactly `per_day`
executions on each of the `days` UTC days before `end_date` (exclusive). Each pattern has a
profile (success rate, lognormal latency, Beta quality, versions); each row is drawn from its
pattern's profile. A share `malformed_share` of rows is then corrupted, one kind per row, in
every way the collector must quarantine (`MALFORMED_KINDS`). Which rows are malformed, and
how, is returned beside the frame (`SimulatedExecutions.malformed_kind`), never inside it.

Determinism: the profile of pattern i comes from a random stream keyed by (seed, i); the rows
of a day come from streams keyed by (seed, date, block of patterns). So the same config gives
the same rows whatever the chunk size, and a different seed gives different rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

import numpy as np
import pandas as pd

from feedback_loop_dagster.lib.collect.schema import EXECUTION_STATUSES
from feedback_loop_dagster.lib.storage import tables

# The frame's columns: the source contract minus `seq`, which the database assigns.
COLUMNS: tuple[str, ...] = tuple(c.name for c in tables.hook_executions.columns if c.name != "seq")

ERROR_CLASSES = ("TimeoutError", "RateLimitError", "ValidationError", "ToolError")

MALFORMED_KINDS: tuple[str, ...] = (
    "unknown_status",  # status outside EXECUTION_STATUSES, e.g. "exploded"
    "negative_duration",  # duration_ms < 0 (completed_at is still started_at + |duration|)
    "quality_out_of_range",  # quality_score outside [0, 1]
    "rating_out_of_range",  # user_rating outside [0, 1] and outside the 1-5 star scale
    "negative_retry_count",  # retry_count < 0
    "completed_before_started",  # completed_at < started_at (duration_ms is positive)
    "malformed_quality_json",  # quality_results is not JSON; quality_score is null
    "finished_without_duration",  # status success with null duration_ms and completed_at
    "duplicate_execution_id",  # repeats the id of an earlier valid row, same pattern and day
)
# The one kind a source with a unique execution_id cannot hold (see simulator.write).
DUPLICATE_KIND = "duplicate_execution_id"

NAMED_PATTERN_IDS = (
    "code-review",
    "summarise-ticket",
    "sql-generator",
    "incident-triage",
    "release-notes",
    "test-writer",
    "doc-search",
    "email-draft",
    "log-explainer",
    "api-client-gen",
    "translate-ui",
    "meeting-notes",
)
# Ids a user may well choose that are not valid Dagster partition keys (`| , [ ] ...`, non-ASCII).
NASTY_PATTERN_IDS = ("agent|planner, v2", "résumé [draft]...")

# Rows of one day are generated in blocks of patterns holding about this many rows; each block
# has its own random stream. Changing it changes every simulation, so it is not configuration.
_BLOCK_ROWS = 25_000
_DAY_US = 86_400_000_000
_EPOCH = date(1970, 1, 1)
_NAT = np.iinfo(np.int64).min  # int64 view of NaT

TIMEOUT_MS = 30_000.0
_IN_PROGRESS_SHARE = 0.006
_RATING_SHARE = 0.30
_QUALITY_JSON_SHARE = 0.12  # of rows with a quality score: about 10% of valid rows
_ANONYMOUS_SHARE = 0.03

# Text columns are generated as integer codes into these tables and decoded once per unit.
_BAD_STATUSES = ("exploded", "on_fire", "???")
_STATUS_TABLE = np.array(EXECUTION_STATUSES + _BAD_STATUSES, dtype=object)
_SUCCESS, _FAILURE, _ERROR, _TIMEOUT, _CANCELLED, _IN_PROGRESS = range(6)
_FIRST_BAD_STATUS = len(EXECUTION_STATUSES)
_UNSUCCESSFUL = np.array([_FAILURE, _ERROR, _TIMEOUT, _CANCELLED])
_UNSUCCESSFUL_WEIGHTS = (0.35, 0.30, 0.20, 0.15)

_ERROR_MESSAGES = {
    "TimeoutError": (
        "pattern execution exceeded the 30000 ms timeout",
        "upstream model call timed out after 30 s",
        "tool 'search' did not answer within 30 s",
    ),
    "RateLimitError": (
        "429 Too Many Requests: rate limit exceeded for the model endpoint",
        "rate limit: 10000 tokens per minute exceeded, retry after 12 s",
        "quota exhausted for this project",
    ),
    "ValidationError": (
        "output failed schema validation: missing field 'summary'",
        "output is not valid JSON: Expecting ',' delimiter",
        "field 'severity' must be one of low, medium, high",
    ),
    "ToolError": (
        "tool 'search' returned HTTP 502",
        "tool 'sql' raised: relation \"orders\" does not exist",
        "tool 'git' exited with status 128",
    ),
}
_MESSAGES_PER_CLASS = 3
# Error code 0 is "no error"; code 1 + MESSAGES_PER_CLASS * class + j is message j of a class.
_ERROR_TYPE_TABLE = np.array(
    [None] + [name for name in ERROR_CLASSES for _ in range(_MESSAGES_PER_CLASS)], dtype=object
)
_ERROR_MESSAGE_TABLE = np.array([None] + [m for name in ERROR_CLASSES for m in _ERROR_MESSAGES[name]], dtype=object)
# Errors of failure/error rows (timeouts are always TimeoutError), as class indexes.
_FAILURE_CLASSES = np.array([ERROR_CLASSES.index(c) for c in ("RateLimitError", "ValidationError", "ToolError")])
_FAILURE_CLASS_WEIGHTS = (0.3, 0.4, 0.3)

_KIND_TABLE = np.array((None,) + MALFORMED_KINDS, dtype=object)
_BAD_RATINGS = np.array([7.5, -1.0, 10.0, 5.5])
_BAD_QUALITY_JSON = np.array(['{"score": ', '{"score": 0.8', "{score: 0.8}", "score=0.8"], dtype=object)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. `end_date` is exclusive: rows fall on the `days` UTC days before it
    (default: today in UTC, so pass it explicitly for reproducible output). `nasty_ids=None`
    means "include ids that are not valid partition keys when patterns >= 4"."""

    patterns: int = 6
    days: int = 14
    per_day: int = 200
    seed: int = 0
    end_date: date | None = None
    malformed_share: float = 0.02
    nasty_ids: bool | None = None
    malformed_kinds: tuple[str, ...] = field(default=MALFORMED_KINDS)
    chunk_rows: int = 100_000

    def __post_init__(self) -> None:
        for name in ("patterns", "days", "per_day", "chunk_rows"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not 0.0 <= self.malformed_share <= 1.0:
            raise ValueError(f"malformed_share must be within [0, 1], got {self.malformed_share!r}")
        if self.end_date is not None and (
            isinstance(self.end_date, datetime) or not isinstance(self.end_date, date)
        ):
            raise ValueError(f"end_date must be a date (not a datetime), got {self.end_date!r}")
        unknown = set(self.malformed_kinds) - set(MALFORMED_KINDS)
        if unknown:
            raise ValueError(f"unknown malformed kinds {sorted(unknown)}; known: {list(MALFORMED_KINDS)}")
        if self.malformed_share > 0 and not self.malformed_kinds:
            raise ValueError("malformed_share > 0 needs at least one malformed kind")
        object.__setattr__(self, "malformed_kinds", tuple(self.malformed_kinds))

    @property
    def total_rows(self) -> int:
        return self.patterns * self.days * self.per_day

    def resolved(self) -> SimulationConfig:
        """This config with `end_date` and `nasty_ids` made explicit (end_date: today, UTC)."""
        return replace(
            self,
            end_date=self.end_date or datetime.now(UTC).date(),
            nasty_ids=self.patterns >= 4 if self.nasty_ids is None else self.nasty_ids,
        )

    def window_dates(self) -> list[date]:
        """The simulated UTC days, oldest first."""
        end = self.resolved().end_date
        return [end - timedelta(days=self.days - d) for d in range(self.days)]


class SimulatedExecutions(NamedTuple):
    """Rows for the source table (`COLUMNS`, no `seq`) and, aligned on the same index, the
    malformed kind of each row (None for a valid row). The kinds are never written."""

    frame: pd.DataFrame
    malformed_kind: pd.Series


@dataclass(frozen=True)
class PatternProfile:
    """How one pattern behaves; versions[k] runs from day index version_start_days[k] on."""

    pattern_id: str
    success_rate: float
    latency_median_ms: float
    latency_sigma: float
    quality_mean: float
    quality_concentration: float
    versions: tuple[str | None, ...]
    version_start_days: tuple[int, ...]
    # Per version, relative to the first: latency factor, success-rate and quality shifts.
    version_latency_factor: tuple[float, ...]
    version_success_shift: tuple[float, ...]
    version_quality_shift: tuple[float, ...]


def pattern_ids(count: int, nasty_ids: bool | None = None) -> list[str]:
    """Pattern ids by index: named ones (`code-review`, ...), then `pattern-0042`. With nasty
    ids (default when count >= 4) positions 2 and 3 hold ids that are not valid partition keys
    and the named ids move up two places."""
    if nasty_ids is None:
        nasty_ids = count >= 4
    named = NAMED_PATTERN_IDS[:2] + NASTY_PATTERN_IDS + NAMED_PATTERN_IDS[2:] if nasty_ids else NAMED_PATTERN_IDS
    return [named[i] if i < len(named) else f"pattern-{i:04d}" for i in range(count)]


def pattern_profiles(config: SimulationConfig) -> list[PatternProfile]:
    config = config.resolved()
    ids = pattern_ids(config.patterns, config.nasty_ids)
    return [_profile(config, i, pattern_id) for i, pattern_id in enumerate(ids)]


def _profile(config: SimulationConfig, index: int, pattern_id: str) -> PatternProfile:
    rng = np.random.default_rng(np.random.SeedSequence(int(config.seed), spawn_key=(0, index)))
    success_rate = rng.uniform(0.75, 0.97)
    median = math.exp(rng.uniform(math.log(200.0), math.log(3000.0)))
    sigma = rng.uniform(0.3, 0.8)
    quality_mean = rng.uniform(0.6, 0.9)
    concentration = rng.uniform(8.0, 30.0)
    # Every fourth pattern is unversioned (an older source that does not record versions).
    n_versions = 1 if index % 4 == 3 else min(int(rng.integers(1, 4)), config.days)
    versions = (None,) if index % 4 == 3 else tuple(f"v{k + 1}" for k in range(n_versions))
    starts = tuple(round(k * config.days / n_versions) for k in range(n_versions))
    latency = (1.0,) + tuple(math.exp(rng.normal(0.0, 0.15)) for _ in range(n_versions - 1))
    success = (0.0,) + tuple(rng.normal(0.0, 0.03) for _ in range(n_versions - 1))
    quality = (0.0,) + tuple(rng.normal(0.0, 0.04) for _ in range(n_versions - 1))
    return PatternProfile(
        pattern_id=pattern_id,
        success_rate=float(success_rate),
        latency_median_ms=float(median),
        latency_sigma=float(sigma),
        quality_mean=float(quality_mean),
        quality_concentration=float(concentration),
        versions=versions,
        version_start_days=starts,
        version_latency_factor=latency,
        version_success_shift=tuple(float(s) for s in success),
        version_quality_shift=tuple(float(q) for q in quality),
    )


def simulate_rows(config: SimulationConfig | None = None, **overrides) -> SimulatedExecutions:
    """The whole simulation in memory: `simulate_rows(patterns=2, days=3, seed=7)`."""
    config = replace(config or SimulationConfig(), **overrides)
    parts = list(iter_simulated_chunks(config))
    return SimulatedExecutions(
        pd.concat([p.frame for p in parts]), pd.concat([p.malformed_kind for p in parts])
    )


def iter_simulated_chunks(config: SimulationConfig) -> Iterator[SimulatedExecutions]:
    """The simulation in chunks of about `config.chunk_rows` rows, oldest day first; a pattern's
    rows of one day are never split across chunks. The index runs over the whole simulation."""
    config = config.resolved()
    model = _Model(config)
    frames: list[pd.DataFrame] = []
    kinds: list[np.ndarray] = []
    pending = 0
    offset = 0

    def flush() -> SimulatedExecutions:
        nonlocal frames, kinds, pending, offset
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        frame.index = pd.RangeIndex(offset, offset + len(frame))
        kind = pd.Series(np.concatenate(kinds), index=frame.index, dtype=object, name="malformed_kind")
        offset += len(frame)
        frames, kinds, pending = [], [], 0
        return SimulatedExecutions(frame, kind)

    for day_index, day in enumerate(config.window_dates()):
        for block in range(model.blocks):
            frame, kind = model.unit(day_index, day, block)
            frames.append(frame)
            kinds.append(kind)
            pending += len(frame)
            if pending >= config.chunk_rows:
                yield flush()
    if frames:
        yield flush()


class _Model:
    """Per-pattern parameters as arrays, and the vectorised generation of one unit of rows
    (one day, one block of patterns)."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.profiles = pattern_profiles(config)
        self.block_size = max(1, _BLOCK_ROWS // config.per_day)
        self.blocks = math.ceil(config.patterns / self.block_size)
        self.n_versions = max(len(p.versions) for p in self.profiles)
        shape = (len(self.profiles), self.n_versions)
        self.ids = np.array([p.pattern_id for p in self.profiles], dtype=object)
        self.version_names = np.full(shape, None, dtype=object)
        self.version_starts = np.full(shape, np.iinfo(np.int64).max, dtype=np.int64)
        self.success = np.zeros(shape)
        self.log_median = np.zeros(shape)
        self.quality_mean = np.zeros(shape)
        for i, p in enumerate(self.profiles):
            k = len(p.versions)
            self.version_names[i, :k] = p.versions
            self.version_starts[i, :k] = p.version_start_days
            self.success[i, :k] = np.clip(p.success_rate + np.array(p.version_success_shift), 0.70, 0.99)
            self.log_median[i, :k] = np.log(p.latency_median_ms * np.array(p.version_latency_factor))
            self.quality_mean[i, :k] = np.clip(p.quality_mean + np.array(p.version_quality_shift), 0.3, 0.97)
        self.version_names = self.version_names.ravel()
        self.sigma = np.array([p.latency_sigma for p in self.profiles])
        self.concentration = np.array([p.quality_concentration for p in self.profiles])
        pool = max(100, min(config.per_day * 10, 100_000))
        # Index -1 (the last entry) is an anonymous caller.
        self.users = np.array([f"user-{i}" for i in range(1, pool + 1)] + [None], dtype=object)

    def unit(self, day_index: int, day: date, block: int) -> tuple[pd.DataFrame, np.ndarray]:
        config = self.config
        first = block * self.block_size
        patterns = np.arange(first, min(first + self.block_size, config.patterns))
        per_day = config.per_day
        n = len(patterns) * per_day
        rng = np.random.default_rng(
            np.random.SeedSequence(int(config.seed), spawn_key=(1, day.toordinal(), block))
        )
        # Rows are pattern-major: pattern patterns[j] owns rows j*per_day .. (j+1)*per_day - 1.
        p = np.repeat(patterns, per_day)

        # Version: the latest one started by this day; on a switch day half the rows still run
        # the previous one (a rollout).
        current = (self.version_starts[patterns] <= day_index).sum(axis=1) - 1
        switching = (current > 0) & (self.version_starts[patterns, current] == day_index)
        version = np.repeat(current, per_day) - (np.repeat(switching, per_day) & (rng.random(n) < 0.5))

        day_start_us = (day - _EPOCH).days * _DAY_US
        offsets = np.sort(rng.integers(0, _DAY_US, size=(len(patterns), per_day)), axis=1).ravel()
        started_us = day_start_us + offsets
        execution_id = _uuids(rng, n)

        status, in_progress = self._status(rng, n, p, version)
        is_success = status == _SUCCESS
        is_failed = (status == _FAILURE) | (status == _ERROR)
        is_timeout = status == _TIMEOUT
        is_cancelled = status == _CANCELLED

        # Latency: lognormal around the version's median; failures fail fast, timeouts hit the
        # limit, cancellations stop part-way. Rounded to microseconds so completed_at agrees.
        log_median = self.log_median[p, version]
        z = rng.standard_normal(n)
        duration = np.exp(log_median + self.sigma[p] * z)
        duration = np.where(is_success, np.minimum(duration, 0.98 * TIMEOUT_MS), duration)
        duration = np.where(is_failed, duration * math.exp(-0.7), duration)
        duration = np.where(is_timeout, TIMEOUT_MS + rng.uniform(0.0, 500.0, n), duration)
        duration = np.where(is_cancelled, duration * rng.uniform(0.1, 0.9, n), duration)
        duration = np.round(duration, 3)
        performance = np.round(1.0 / (1.0 + (duration / (2.0 * np.exp(log_median))) ** 1.5), 4)

        # Quality ~ Beta around the version's mean; lower and only sometimes scored on failure.
        mean = self.quality_mean[p, version]
        mean = np.where(is_failed, mean * 0.5, mean)
        concentration = self.concentration[p]
        quality = np.round(rng.beta(mean * concentration, (1.0 - mean) * concentration), 4)
        has_quality = is_success | (is_failed & (rng.random(n) < 0.5))
        as_json = has_quality & (rng.random(n) < _QUALITY_JSON_SHARE)
        checks = rng.integers(3, 9, size=n)

        # Explicit feedback on ~30% of finished rows: 1-5 stars that follow quality, as [0, 1].
        rated = (rng.random(n) < _RATING_SHARE) & ~in_progress
        basis = np.where(has_quality, quality, np.where(is_success, mean, 0.3))
        stars = np.clip(np.rint(1.0 + 4.0 * basis + rng.normal(0.0, 0.7, n)), 1, 5)
        rating = np.where(rated, (stars - 1.0) / 4.0, np.nan)

        retry_count, error = _retries_and_errors(rng, status)

        user = rng.integers(0, len(self.users) - 1, size=n)
        user[rng.random(n) < _ANONYMOUS_SHARE] = -1

        rows = _Rows(
            execution_id=execution_id,
            started_us=started_us,
            completed_us=np.where(in_progress, _NAT, started_us + np.rint(duration * 1000).astype(np.int64)),
            duration_ms=np.where(in_progress, np.nan, duration),
            status=status,
            quality_score=np.where(has_quality & ~as_json, quality, np.nan),
            quality_results=_quality_json(quality, checks, as_json),
            performance_score=np.where(in_progress, np.nan, performance),
            user_rating=rating,
            retry_count=retry_count,
            error=error,
        )
        kind = _corrupt(rng, rows, config.malformed_share, config.malformed_kinds, per_day, duration, performance)

        order = np.argsort(started_us, kind="stable")
        return self._frame(rows, order, p, version, user), _KIND_TABLE[kind[order]]

    def _status(self, rng: np.random.Generator, n: int, p: np.ndarray, version: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Status codes at each row's version's success rate, and which rows are still running."""
        succeeded = rng.random(n) < self.success[p, version]
        unsuccessful = _UNSUCCESSFUL[rng.choice(len(_UNSUCCESSFUL), size=n, p=_UNSUCCESSFUL_WEIGHTS)]
        status = np.where(succeeded, _SUCCESS, unsuccessful)
        in_progress = rng.random(n) < _IN_PROGRESS_SHARE
        status[in_progress] = _IN_PROGRESS
        return status, in_progress

    def _frame(self, rows: _Rows, order: np.ndarray, p: np.ndarray, version: np.ndarray, user: np.ndarray) -> pd.DataFrame:
        """The unit's rows in the source contract's columns, in `order` (by start time)."""
        return pd.DataFrame(
            {
                "execution_id": rows.execution_id[order],
                "pattern_id": self.ids[p[order]],
                "pattern_version": self.version_names[(p * self.n_versions + version)[order]],
                "started_at": _timestamps(rows.started_us[order]),
                "completed_at": _timestamps(rows.completed_us[order]),
                "duration_ms": rows.duration_ms[order],
                "status": _STATUS_TABLE[rows.status[order]],
                "quality_score": rows.quality_score[order],
                "quality_results": rows.quality_results[order],
                "performance_score": rows.performance_score[order],
                "user_rating": rows.user_rating[order],
                "retry_count": rows.retry_count[order],
                "error_type": _ERROR_TYPE_TABLE[rows.error[order]],
                "error_message": _ERROR_MESSAGE_TABLE[rows.error[order]],
                "unit_id": self.users[user[order]],
            },
            copy=False,
        )


def _retries_and_errors(rng: np.random.Generator, status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Retries (rare on success, common before a failure) and error codes (a class, TimeoutError
    for timeouts, and one of its messages; 0 = no error)."""
    n = len(status)
    is_failed = (status == _FAILURE) | (status == _ERROR)
    is_timeout = status == _TIMEOUT
    retry_draw = rng.random(n)
    retries_if_failed = rng.integers(1, 4, size=n)
    retry_count = np.zeros(n, dtype=np.int64)
    retry_count[(status == _SUCCESS) & (retry_draw < 0.04)] = 1
    retry_count[(status == _CANCELLED) & (retry_draw < 0.10)] = 1
    failed_retry = (is_failed | is_timeout) & (retry_draw < 0.45)
    retry_count[failed_retry] = retries_if_failed[failed_retry]

    failure_class = _FAILURE_CLASSES[rng.choice(len(_FAILURE_CLASSES), size=n, p=_FAILURE_CLASS_WEIGHTS)]
    error_class = np.where(is_timeout, ERROR_CLASSES.index("TimeoutError"), failure_class)
    error = 1 + _MESSAGES_PER_CLASS * error_class + rng.integers(0, _MESSAGES_PER_CLASS, size=n)
    return retry_count, np.where(is_failed | is_timeout, error, 0)


@dataclass
class _Rows:
    """The columns of one unit that malformation may touch (codes for text columns)."""

    execution_id: np.ndarray
    started_us: np.ndarray
    completed_us: np.ndarray
    duration_ms: np.ndarray
    status: np.ndarray
    quality_score: np.ndarray
    quality_results: np.ndarray
    performance_score: np.ndarray
    user_rating: np.ndarray
    retry_count: np.ndarray
    error: np.ndarray


def _timestamps(micros: np.ndarray) -> pd.api.extensions.ExtensionArray:
    return pd.Series(micros.astype("datetime64[us]")).dt.tz_localize("UTC").array


def _uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Version-4-shaped UUID strings made from the stream's bits (so they follow the seed)."""
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = np.frombuffer(raw.tobytes().hex().encode("ascii"), dtype=np.uint8).reshape(n, 32)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, 0:8], out[:, 9:13], out[:, 14:18] = hexed[:, 0:8], hexed[:, 8:12], hexed[:, 12:16]
    out[:, 19:23], out[:, 24:36] = hexed[:, 16:20], hexed[:, 20:32]
    text = out.tobytes().decode("ascii")
    ids = np.empty(n, dtype=object)
    ids[:] = [text[i : i + 36] for i in range(0, 36 * n, 36)]
    return ids


def _quality_json(quality: np.ndarray, checks: np.ndarray, as_json: np.ndarray) -> np.ndarray:
    out = np.full(len(quality), None, dtype=object)
    rows = np.flatnonzero(as_json)
    out[rows] = [f'{{"score": {q:.4f}, "checks": {c}}}' for q, c in zip(quality[rows], checks[rows], strict=True)]
    return out


def _corrupt(
    rng: np.random.Generator,
    rows: _Rows,
    share: float,
    kinds: tuple[str, ...],
    per_day: int,
    duration: np.ndarray,
    performance: np.ndarray,
) -> np.ndarray:
    """Corrupt a share of rows in place, one kind per row; returns each row's kind code
    (0 = valid, else 1 + index in MALFORMED_KINDS).

    Every (pattern, day) gets the share of its rows, rounded stochastically (so no partition
    holds more than ceil(share * per_day) malformed rows and the total share holds on
    average); kinds are dealt round-robin over the unit from a random start, so every kind
    shows up as soon as there are that many malformed rows."""
    n = len(duration)
    kind = np.zeros(n, dtype=np.int64)
    groups = n // per_day
    expected = share * per_day
    per_group = int(expected) + (rng.random(groups) < expected - int(expected))
    # The per_group[j] rows with the smallest random keys of group j are malformed.
    keys = rng.random((groups, per_day))
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    bad = rng.permutation(np.flatnonzero((ranks < per_group[:, None]).ravel()))
    count = len(bad)
    if count == 0:
        return kind
    codes = np.array([1 + MALFORMED_KINDS.index(k) for k in kinds])
    kind[bad] = codes[(rng.integers(len(codes)) + np.arange(count)) % len(codes)]

    # A malformed row starts from a finished row, so its kind is its only defect.
    running = bad[rows.status[bad] == _IN_PROGRESS]
    rows.status[running] = _SUCCESS
    rows.completed_us[running] = rows.started_us[running] + np.rint(duration[running] * 1000).astype(np.int64)
    rows.duration_ms[running] = duration[running]
    rows.performance_score[running] = performance[running]

    _introduce_defects(rows, kind, bad, rng.integers(0, 1 << 30, size=count), rng.uniform(0.05, 1.5, size=count),
                       duration, per_day)
    return kind


def _introduce_defects(
    rows: _Rows,
    kind: np.ndarray,
    bad: np.ndarray,
    variant: np.ndarray,
    magnitude: np.ndarray,
    duration: np.ndarray,
    per_day: int,
) -> None:
    """Gives each row of `bad` the defect its `kind` names (`variant` and `magnitude`: its random
    draws); a duplicate with no earlier valid row to copy becomes valid again (kind 0)."""
    n = len(kind)

    def pick(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mask = kind[bad] == 1 + MALFORMED_KINDS.index(name)
        return bad[mask], variant[mask], magnitude[mask]

    r, v, _ = pick("unknown_status")
    rows.status[r] = _FIRST_BAD_STATUS + v % len(_BAD_STATUSES)

    r, _, _ = pick("negative_duration")
    rows.duration_ms[r] = -duration[r]

    r, v, m = pick("quality_out_of_range")
    rows.quality_score[r] = np.round(np.where(v % 2 == 0, 1.0 + m, -m), 4)
    rows.quality_results[r] = None

    r, v, _ = pick("rating_out_of_range")
    rows.user_rating[r] = _BAD_RATINGS[v % len(_BAD_RATINGS)]

    r, v, _ = pick("negative_retry_count")
    rows.retry_count[r] = -(1 + v % 3)

    r, _, _ = pick("completed_before_started")
    rows.completed_us[r] = rows.started_us[r] - np.rint(duration[r] * 1000).astype(np.int64)

    r, v, _ = pick("malformed_quality_json")
    rows.quality_results[r] = _BAD_QUALITY_JSON[v % len(_BAD_QUALITY_JSON)]
    rows.quality_score[r] = np.nan

    r, _, _ = pick("finished_without_duration")
    rows.status[r] = _SUCCESS
    rows.duration_ms[r] = np.nan
    rows.completed_us[r] = _NAT
    rows.performance_score[r] = np.nan
    rows.error[r] = 0

    # A duplicate repeats the id of the latest earlier valid row of its pattern that day (rows
    # are pattern-major and time-sorted within a pattern); with none to copy it stays valid.
    r, _, _ = pick("duplicate_execution_id")
    if len(r):
        valid_index = np.where(kind == 0, np.arange(n), -1)
        latest_valid_before = np.concatenate(([-1], np.maximum.accumulate(valid_index)[:-1]))
        source = latest_valid_before[r]
        ok = source >= (r // per_day) * per_day
        rows.execution_id[r[ok]] = rows.execution_id[source[ok]]
        kind[r[~ok]] = 0
