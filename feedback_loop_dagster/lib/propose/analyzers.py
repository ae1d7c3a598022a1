"""Analyzers: rules that turn a pattern's evidence into proposals, and how to plug in your own.

Register a function with `@analyzer("name")`, or expose it in your package's metadata under the
entry point group `feedback_loop_dagster.analyzers` (name = the analyzer's name, value =
`module:function`). An analyzer takes a `PatternEvidence` and returns `ProposalDraft`s; every
number in a draft must come from the evidence (DESIGN.md: estimated deltas are never constants).
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from importlib.metadata import entry_points
from typing import Any

from feedback_loop_dagster.lib.registry.patch import diff_patch
from feedback_loop_dagster.lib.registry.versions import Version
from feedback_loop_dagster.lib.stats import ArmStats, Policy, evaluate_metric
from feedback_loop_dagster.lib.stats.fixed_horizon import normal_sf, wilson_interval

ENTRY_POINT_GROUP = "feedback_loop_dagster.analyzers"
TRANSIENT_ERRORS = frozenset({"RateLimitError", "ConnectionError", "ServiceUnavailableError", "TransientError"})
MIN_EXECUTIONS = 30
MIN_SHARE = 0.02


@dataclass(frozen=True)
class PatternEvidence:
    """What the analyzers see of one pattern at the end of one window (its active version)."""

    pattern_id: str
    window: date
    policy: Policy
    active: Version
    parent: Version | None
    stats: ArmStats  # active version, current period
    previous_stats: ArmStats  # active version, the period before
    error_counts: dict[str, int]  # failures by error class, current period
    retried_executions: int  # executions with retry_count > 0
    retried_successes: int
    units: int  # executions with a unit_id
    distinct_units: int
    latency_p05: float | None
    regressions: list[str]

    @property
    def finished(self) -> int:
        return self.stats.success.n if self.stats.success is not None else 0


@dataclass(frozen=True)
class ProposalDraft:
    analyzer: str
    kind: str  # reliability | performance | quality | any custom kind
    title: str
    metric: str  # the metric the change should improve (success, latency, quality, ...)
    expected_delta: float  # on the metric's improvement scale (positive = better)
    expected_delta_low: float
    expected_delta_high: float
    risk: str  # low | medium | high
    evidence: dict[str, Any] = field(default_factory=dict)
    patch: dict[str, Any] | None = None

    @property
    def priority(self) -> float:
        """Expected gain discounted by its uncertainty and its risk."""
        weight = {"low": 1.0, "medium": 0.6, "high": 0.3}.get(self.risk, 0.5)
        return round(max(self.expected_delta_low, 0.0) * 0.5 + max(self.expected_delta, 0.0) * 0.5, 6) * weight


Analyzer = Callable[[PatternEvidence], list[ProposalDraft]]
_REGISTRY: dict[str, Analyzer] = {}


def analyzer(name: str) -> Callable[[Analyzer], Analyzer]:
    def register(function: Analyzer) -> Analyzer:
        if name in _REGISTRY and _REGISTRY[name] is not function:
            raise ValueError(f"an analyzer named {name!r} is already registered")
        _REGISTRY[name] = function
        return function

    return register


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered_analyzers() -> dict[str, Analyzer]:
    """Built-in and decorated analyzers plus those published under the entry point group."""
    return {**_published_analyzers(tuple(sys.path)), **_REGISTRY}


@functools.lru_cache(maxsize=8)
def _published_analyzers(search_path: tuple[str, ...]) -> dict[str, Analyzer]:
    # Scanning installed distributions takes tens of milliseconds and the loop asks once per
    # partition; what is installed only changes with the import path, hence the cache key.
    return {entry.name: entry.load() for entry in entry_points(group=ENTRY_POINT_GROUP)}


def run_analyzers(evidence: PatternEvidence) -> list[ProposalDraft]:
    drafts = []
    for name, function in sorted(registered_analyzers().items()):
        for draft in function(evidence) or []:
            if not isinstance(draft, ProposalDraft):
                raise TypeError(f"analyzer {name!r} returned {type(draft).__name__}, expected ProposalDraft")
            drafts.append(draft)
    return drafts


def _share_interval(count: int, total: int, alpha: float) -> tuple[float, float, float]:
    low, high = wilson_interval(count, total, alpha)
    return count / total, low, high


@analyzer("timeout_budget")
def timeout_budget(evidence: PatternEvidence) -> list[ProposalDraft]:
    """Timeouts that a longer timeout would let finish, from the fitted latency distribution."""
    timeouts = evidence.error_counts.get("TimeoutError", 0) + evidence.error_counts.get("timeout", 0)
    total = evidence.finished
    if total < MIN_EXECUTIONS or timeouts / total < MIN_SHARE or evidence.stats.latency is None:
        return []
    share, low, high = _share_interval(timeouts, total, evidence.policy.significance_level)
    current = evidence.active.config.get("timeout_ms")
    evidence_fields = {"timeouts": timeouts, "finished": total, "timeout_share": share}
    if isinstance(current, int | float) and current > 0:
        proposed = int(current * 2)
        # Share of executions slower than t under the lognormal fitted to the log-latencies.
        mu, sigma = evidence.stats.latency.mean, math.sqrt(max(evidence.stats.latency.variance, 1e-12))
        survival = lambda t: normal_sf((math.log(t) - mu) / sigma)  # noqa: E731
        recoverable = (survival(current) - survival(proposed)) / survival(current) if survival(current) > 0 else 0.0
        evidence_fields |= {"timeout_ms": current, "recoverable_share": recoverable}
        patch = {"timeout_ms": proposed}
        title = f"Raise timeout_ms from {current} to {proposed}"
    else:
        recoverable, patch, title = 1.0, None, "Add a timeout budget (no timeout_ms knob in the config)"
        evidence_fields["note"] = "upper bound: assumes every timeout would finish"
    return [
        ProposalDraft(
            analyzer="timeout_budget",
            kind="reliability",
            title=title,
            metric="success",
            expected_delta=share * recoverable,
            expected_delta_low=low * recoverable,
            expected_delta_high=high * recoverable,
            risk="low",
            evidence=evidence_fields,
            patch=patch,
        )
    ]


@analyzer("transient_retries")
def transient_retries(evidence: PatternEvidence) -> list[ProposalDraft]:
    """Failures from transient errors that one more retry would turn into successes."""
    transient = sum(n for error, n in evidence.error_counts.items() if error in TRANSIENT_ERRORS)
    total = evidence.finished
    if total < MIN_EXECUTIONS or transient / total < MIN_SHARE:
        return []
    share, low, high = _share_interval(transient, total, evidence.policy.significance_level)
    if evidence.retried_executions:
        retry_success = evidence.retried_successes / evidence.retried_executions
    else:
        retry_success = evidence.stats.success.mean
    current = evidence.active.config.get("max_retries")
    patch = {"max_retries": int(current) + 2} if isinstance(current, int | float) else None
    return [
        ProposalDraft(
            analyzer="transient_retries",
            kind="reliability",
            title=(
                f"Raise max_retries from {current} to {int(current) + 2}"
                if patch
                else "Retry transient errors (no max_retries knob in the config)"
            ),
            metric="success",
            expected_delta=share * retry_success,
            expected_delta_low=low * retry_success,
            expected_delta_high=high * retry_success,
            risk="low",
            evidence={
                "transient_failures": transient,
                "finished": total,
                "retried_executions": evidence.retried_executions,
                "retry_success_rate": retry_success,
                "max_retries": current,
            },
            patch=patch,
        )
    ]


@analyzer("latency_cache")
def latency_cache(evidence: PatternEvidence) -> list[ProposalDraft]:
    """Repeated calls from the same unit that a response cache could serve at the fast tail's speed."""
    ttl = evidence.active.config.get("cache_ttl_seconds")
    latency = evidence.stats.latency
    if (
        not isinstance(ttl, int | float)
        or ttl > 0
        or evidence.units < MIN_EXECUTIONS
        or latency is None
        or not evidence.latency_p05
    ):
        return []
    repeats = evidence.units - evidence.distinct_units
    if repeats / evidence.units < MIN_SHARE:
        return []
    share, low, high = _share_interval(repeats, evidence.units, evidence.policy.significance_level)
    # A hit is assumed as fast as the fastest 5% of calls; the geometric mean then moves by
    # exp(share * (log p05 - mean log latency)).
    log_gap = math.log(evidence.latency_p05) - latency.mean
    improvement = lambda s: 1.0 - math.exp(s * log_gap)  # noqa: E731
    return [
        ProposalDraft(
            analyzer="latency_cache",
            kind="performance",
            title="Enable a response cache (cache_ttl_seconds 0 -> 3600)",
            metric="latency",
            expected_delta=improvement(share),
            expected_delta_low=improvement(low),
            expected_delta_high=improvement(high),
            risk="medium",
            evidence={"repeated_calls": repeats, "calls_with_unit": evidence.units, "latency_p05": evidence.latency_p05},
            patch={"cache_ttl_seconds": 3600},
        )
    ]


@analyzer("quality_regression")
def quality_regression(evidence: PatternEvidence) -> list[ProposalDraft]:
    """Quality fell significantly since the previous period: propose the parent's config again."""
    if "quality" not in evidence.regressions or evidence.parent is None:
        return []
    fixed = evidence.policy.model_copy(update={"test_method": "fixed_horizon"})
    # The previous period as "treatment": the improvement reverting would bring.
    result = evaluate_metric("quality", evidence.stats.quality, evidence.previous_stats.quality, fixed)
    low, high = result.improvement_ci
    patch = diff_patch(evidence.active.config, evidence.parent.config)
    return [
        ProposalDraft(
            analyzer="quality_regression",
            kind="quality",
            title=f"Revert to the config of {evidence.parent.version}",
            metric="quality",
            expected_delta=float(result.effect),
            expected_delta_low=float(low),
            expected_delta_high=float(high),
            risk="medium",
            evidence={"quality_now": result.mean_control, "quality_before": result.mean_treatment, "p_value": result.p_value},
            patch=patch or None,
        )
    ]


__all__ = [
    "ENTRY_POINT_GROUP",
    "PatternEvidence",
    "ProposalDraft",
    "analyzer",
    "registered_analyzers",
    "run_analyzers",
    "unregister",
]
