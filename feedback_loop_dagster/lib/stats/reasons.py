"""The decision's reason in words: effects in the metric's own unit (:mod:`.units`), verdicts as
"better"/"worse", margins as the harm they allow.  One function per kind of verdict; the rule
itself lives in :mod:`.decision`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .units import format_effect, format_in_unit, format_margin, to_unit, verdict_of

if TYPE_CHECKING:  # pragma: no cover
    from .decision import MetricResult
    from .policy import Policy


def looks_text(n_control: int, n_treatment: int, alpha: float, sequential: bool) -> str:
    """``n=1000/1000; 95% CS``: the arms' executions and what the intervals are."""
    kind = "CS" if sequential else "CI"
    return f"n={n_control}/{n_treatment}; {(1 - alpha) * 100:g}% {kind}"


def described(r: MetricResult) -> str:
    """``latency -12.0% [-15.1%, -8.7%] (850 -> 748 ms), better``."""
    return format_effect(r, label=True, verdict=verdict_of(r))


def _p_text(r: MetricResult, alpha: float, holm: int) -> str:
    sign = "<=" if r.adjusted_p_value <= alpha else ">"
    adjusted = f" (Holm-adjusted over {holm} primaries)" if holm > 1 else ""
    return f"p={r.adjusted_p_value:.3g} {sign} {alpha:g}{adjusted}"


def srm_reason(n_control: int, n_treatment: int, split: float, p_value: float, threshold: float) -> str:
    return (f"sample-ratio mismatch: {n_control}/{n_treatment} executions vs the planned "
            f"{(1 - split) * 100:g}/{split * 100:g} split (chi-square p={p_value:.2g} < {threshold:g}); no decision")


def no_data_reason(primaries: Sequence[str], looks: str) -> str:
    return f"no data yet for the primary metric(s) {', '.join(primaries)}; {looks}"


def collecting_reason(r: MetricResult, need_control: int, need_treatment: int, why: str) -> str:
    return (f"collecting data: {r.label} has n={r.n_control}/{r.n_treatment}, needs "
            f"{need_control}/{need_treatment} per arm ({why})")


def harm_reason(harmed: Sequence[MetricResult], breached: Sequence[MetricResult], alpha: float, holm: int,
                looks: str) -> str:
    parts = [f"significant harm on primary {described(r)}, {_p_text(r, alpha, holm)}" for r in harmed]
    parts += [f"guardrail breach: {described(r)}, beyond its {format_margin(r.metric, r.margin or 0.0)} margin"
              for r in breached]
    return "; ".join(parts) + f"; {looks}"


def _bound(r: MetricResult) -> str:
    return format_in_unit(r.metric, to_unit(r.metric, r.ni_bound))


def _guardrail_held(r: MetricResult) -> str:
    margin = format_margin(r.metric, r.margin or 0.0)
    if r.significant_harm:  # worse, but by less than the margin accepts
        return f"{described(r)}, within its {margin} margin (bound {_bound(r)})"
    return f"{described(r)} (bound {_bound(r)}, margin {margin})"


def _guardrail_pending(r: MetricResult, more: int | None, gate: int) -> str:
    margin = format_margin(r.metric, r.margin or 0.0)
    if not r.ready:
        return (f"{r.label} has {r.n_control}/{r.n_treatment} observations, fewer than {gate} per arm: "
                f"not yet shown to stay within {margin}")
    text = f"{described(r)} not yet shown to stay within {margin} (always-valid bound {_bound(r)})"
    if more is None:
        return text + "; at the observed effect it may never be"
    return text + f", needs about {more} more executions per arm"


def apply_reason(lead: MetricResult, confidence: float, threshold: float, guardrails: Sequence[MetricResult],
                 alpha: float, holm: int, looks: str) -> str:
    held = "; ".join(_guardrail_held(r) for r in guardrails)
    guards = f"guardrails non-inferior: {held}" if guardrails else "no guardrail data"
    return (f"{described(lead)}, {_p_text(lead, alpha, holm)}, confidence {confidence:.4g} >= {threshold:g}; "
            f"{guards}; {looks}")


def pending_reason(lead: MetricResult, pending: Sequence[tuple[MetricResult, int | None]], gate: int,
                   alpha: float, holm: int, looks: str) -> str:
    waits = "; ".join(_guardrail_pending(r, more, gate) for r, more in pending)
    return (f"{described(lead)}, {_p_text(lead, alpha, holm)}; waiting for evidence on "
            f"{'a guardrail' if len(pending) == 1 else 'guardrails'}: {waits}; {looks}")


def threshold_reason(lead: MetricResult, confidence: float, threshold: float, alpha: float, holm: int,
                     looks: str) -> str:
    return (f"{described(lead)}, {_p_text(lead, alpha, holm)}, but confidence {confidence:.4g} < "
            f"auto_apply_threshold {threshold:g}; {looks}")


def no_difference_reason(lead: MetricResult, additional: int, policy: Policy, guardrails: int, holm: int,
                         looks: str) -> str:
    covering = f", covering {guardrails} guardrail{'s' if guardrails != 1 else ''}" if guardrails else ""
    more = (f"about {additional} more executions per arm for {policy.power * 100:g}% power at a "
            f"{policy.minimum_detectable_effect * 100:g}% effect{covering}" if additional > 0
            else "planned sample size reached")
    return (f"no significant difference yet: {described(lead)}, {_p_text(lead, policy.significance_level, holm)}; "
            f"{more}; {looks}")


def inconclusive_reason(reason: str, days_run: int | None, n_control: int, n_treatment: int,
                        policy: Policy) -> str:
    if policy.max_experiment_days is not None and days_run is not None and days_run >= policy.max_experiment_days:
        limit = f"{days_run} days (max_experiment_days {policy.max_experiment_days})"
    else:
        limit = f"{n_control}/{n_treatment} executions (max_sample_per_arm {policy.max_sample_per_arm})"
    return f"inconclusive: no decision after {limit}; control kept. Last look: {reason}"


def observe_reason(policy_name: str, recommendation: str, reason: str) -> str:
    return f"observe only (policy '{policy_name}' runs no experiments); statistics say {recommendation}: {reason}"


def review_reason(policy_name: str, auto_apply: bool, reason: str) -> str:
    why = "does not auto-apply" if not auto_apply else "requires review"
    return f"awaiting human review (policy '{policy_name}' {why}); evidence supports applying: {reason}"
