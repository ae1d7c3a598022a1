"""The decision rule (DESIGN.md section 3) and the result of an experiment.

Entry point: :func:`evaluate_experiment` (control, treatment, policy) ->
:class:`ExperimentResult`.

Rule
----
For each metric with data the engine runs the policy's test (always-valid
mSPRT by default, or fixed-horizon Welch / two-proportion z) on the metric's
scale: difference of success rates; difference of log-means for latency
(ratio of geometric means, lower is better); difference of means for quality,
rating (higher is better) and retries (lower is better).  Intervals are
signed so that an *improvement* is positive in the metric's good direction.

* ``invalid`` -- the sample-ratio-mismatch test rejects the planned split
  (p < ``srm_threshold``, default 0.001): no decision, whatever the rest says.
* ``continue`` -- a primary metric has fewer executions per arm than the gate:
  ``min_sample_size`` for the sequential test (which may stop at any look);
  for the fixed-horizon test the planned sample size from the power
  calculation (floored by ``min_sample_size``), because a fixed-horizon test
  is only valid at its horizon.
* ``reject`` -- a primary metric is significantly *worse* (its interval lies
  entirely below 0 on the improvement scale and its -- Holm-adjusted -- p is
  <= alpha), or a guardrail is breached (its interval lies entirely beyond the
  non-inferiority margin on the harmful side).
* ``apply`` -- a primary metric is significantly *better* (interval entirely
  above 0, p <= alpha), ``confidence_score = 1 - p >= auto_apply_threshold``,
  no guardrail is breached, SRM passes and each arm reached the gate.  Only an
  improvement in the metric's good direction can be applied.
* ``continue`` otherwise, with how many more executions the policy's minimum
  detectable effect needs.

``feedback_type="all"`` makes success rate, latency and quality all primary;
their p-values are adjusted with Holm's step-down method and "apply" means: at
least one primary is significantly better after the Holm adjustment and none
is significantly worse (nor any guardrail breached).  User rating and retries
are guardrails; primaries with no data in either arm are left out.

Guardrail status: ``ok`` (non-inferiority shown: the interval lies above
``-margin``), ``breach`` (the interval lies below ``-margin``) or
``inconclusive`` (including a guardrail with fewer than ``min_sample_size``
observations per arm).  The reported interval is two-sided at ``1 - alpha``,
so a breach is a one-sided test at level ``alpha/2`` (fixed horizon) and at
most ``alpha`` (sequential): conservative, a candidate is not rejected on
noise.  Demonstrating non-inferiority within a 1-point margin would need far
more executions than these experiments have, so only a *breach* blocks.

Policies that do not auto-apply (``auto_apply=False``) or that
``require_review`` turn an "apply" verdict into ``decision="continue"`` with
``needs_review=True``; ``recommendation`` keeps the statistical verdict.  With
``enable_ab_testing=False`` (monitoring) the decision is ``continue`` (observe
only) unless the result is ``invalid``.

Sequential looks: pass the previous result (or its ``state``/``to_dict()``)
as ``previous`` so that p-values stay monotone and intervals are intersected
across looks of the same experiment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, Mapping

from .estimates import INF, json_safe, relative_effect
from .fixed_horizon import two_proportion_z_core, welch_core
from .metrics import METRIC_ORDER, METRICS, primary_metrics
from .policy import Policy
from .power import _sequential_n, fixed_horizon_sample_size
from .sequential import METHOD as SEQUENTIAL_METHOD
from .sequential import msprt_core
from .srm import srm_chi_square
from .sufficient import ArmStats, ProportionStats, moments

__all__ = [
    "MetricResult",
    "ExperimentResult",
    "evaluate_metric",
    "evaluate_experiment",
    "holm_adjust",
    "DECISIONS",
]

DECISIONS = ("apply", "reject", "continue", "invalid")
_DEFAULT_POLICY = Policy()


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (Holm 1979).

    Same values as ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]``
    (the tests check it); written out because that function calls
    ``gc.collect()`` on every call (~0.1 s), which the decision hot path cannot
    afford.
    """
    m = len(p_values)
    if m <= 1:
        return [min(1.0, p) for p in p_values]
    order = sorted(range(m), key=p_values.__getitem__)
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        v = (m - rank) * p_values[i]
        if v > running:
            running = v
        out[i] = min(1.0, running)
    return out


@dataclass(slots=True)
class MetricResult:
    """Outcome of one metric.

    ``effect``, ``ci_lower``, ``ci_upper``: treatment - control on the test's
    scale (log ratio of geometric means for latency).  ``mean_control`` /
    ``mean_treatment`` are on the metric's natural scale (geometric mean in ms
    for latency).  ``relative_effect`` = treatment / control - 1;
    ``relative_improvement`` is the same signed so that positive = better
    (for latency ``1 - ratio``, i.e. the fraction faster).  ``p_value`` is the
    test's (always-valid, monotone for the sequential test) p-value;
    ``adjusted_p_value`` is Holm-adjusted across primaries for
    ``feedback_type="all"``, else equal to ``p_value``.
    """

    metric: str
    label: str
    role: str
    method: str
    direction: str
    scale: str
    n_control: int
    n_treatment: int
    mean_control: float
    mean_treatment: float
    effect: float
    se: float
    statistic: float
    p_value: float
    adjusted_p_value: float
    ci_lower: float
    ci_upper: float
    relative_effect: float | None
    relative_ci_lower: float | None
    relative_ci_upper: float | None
    relative_improvement: float | None
    relative_improvement_ci_lower: float | None
    relative_improvement_ci_upper: float | None
    significant_improvement: bool
    significant_harm: bool
    ready: bool
    margin: float | None
    guardrail_status: str | None
    tau: float | None
    note: str | None
    significance_level: float = 0.05

    @property
    def improvement_ci(self) -> tuple[float, float]:
        """Interval of the improvement (positive = better) on the test's scale."""
        if METRICS[self.metric].direction > 0:
            return self.ci_lower, self.ci_upper
        return -self.ci_upper, -self.ci_lower

    @property
    def summary(self) -> str:
        return _describe(self, self.significance_level)

    def state(self) -> dict[str, float | None]:
        return {"p_value": self.p_value, "ci_lower": json_safe(self.ci_lower), "ci_upper": json_safe(self.ci_upper)}

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["summary"] = self.summary
        return json_safe(d)


@dataclass(slots=True)
class ExperimentResult:
    """Decision and evidence of one look at an experiment (JSON: :meth:`to_dict`).

    * ``decision``: what to do now -- ``apply`` (promote the candidate; only
      when the policy auto-applies), ``reject``, ``continue`` (keep
      collecting; see ``needs_review``), ``invalid`` (SRM: fix the
      experiment, no decision).  ``recommendation`` is the statistical
      verdict before the policy's review / auto-apply switches.
    * ``lead_metric``: the primary metric the seed fields describe (the
      significantly improved one with the smallest adjusted p, else the
      harmed one, else the primary with the smallest adjusted p).
    * ``required_sample_per_arm``: executions per arm for the policy's
      ``minimum_detectable_effect`` at its ``power`` (the largest over
      primaries and arms), floored by ``min_sample_size``;
      ``additional_samples_needed``: how many more the shorter arm needs.
    * ``srm_p_value`` / ``srm_passed``: sample-ratio-mismatch check.
    * Seed-compatible fields: ``p_value`` (of the lead metric, Holm-adjusted
      for ``all``), ``confidence_score = 1 - p_value`` (not capped),
      ``statistically_significant`` (``p_value <= alpha``),
      ``performance_delta`` (relative improvement of the lead metric,
      positive = better; for latency the fraction faster), ``sample_size``
      (executions in both arms).
    * ``state`` (property, also in ``to_dict()``): pass it back as
      ``previous`` at the next look.
    """

    decision: str
    reason: str
    recommendation: str
    needs_review: bool
    policy: str
    feedback_type: str
    test_method: str
    significance_level: float
    primary_metrics: tuple[str, ...]
    lead_metric: str | None
    metrics: dict[str, MetricResult]
    n_control: int
    n_treatment: int
    srm_chi_square: float
    srm_p_value: float
    srm_passed: bool
    required_sample_per_arm: int
    additional_samples_needed: int
    p_value: float
    confidence_score: float
    statistically_significant: bool
    performance_delta: float
    sample_size: int

    @property
    def state(self) -> dict[str, dict[str, float | None]]:
        """Per-metric sequential state to pass as ``previous`` at the next look."""
        return {m: r.state() for m, r in self.metrics.items()}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "metrics":
                v = {m: r.to_dict() for m, r in v.items()}
            elif f.name == "primary_metrics":
                v = list(v)
            d[f.name] = v
        d["state"] = self.state
        return json_safe(d)


# ---------------------------------------------------------------------------
# per-metric evaluation
# ---------------------------------------------------------------------------

def _previous_for(previous: Mapping[str, Any] | None, metric: str) -> tuple[float | None, tuple | None]:
    if not previous:
        return None, None
    v = previous.get(metric)
    if v is None:
        return None, None
    if isinstance(v, (int, float)):
        return float(v), None
    p = v.get("p_value")
    lo, hi = v.get("ci_lower"), v.get("ci_upper")
    ci = None if (lo is None and hi is None) else (-INF if lo is None else lo, INF if hi is None else hi)
    return (None if p is None else float(p)), ci


def evaluate_metric(
    metric: str,
    control: Any,
    treatment: Any,
    policy: Policy | None = None,
    role: str = "primary",
    previous: Mapping[str, Any] | None = None,
) -> MetricResult:
    """Test one metric (``success``, ``latency``, ``quality``, ``rating``, ``retries``).

    ``control``/``treatment``: the metric's statistics (:class:`ProportionStats`
    for success, :class:`LogMeanStats` -- or a :class:`MeanStats` of
    log-durations -- for latency, :class:`MeanStats` else; ``None`` = no data).
    ``previous``: ``{metric: state}`` from the previous look (see
    :func:`evaluate_experiment`).  ``role="guardrail"`` adds the
    non-inferiority status against the policy's margin.
    """
    policy = policy or _DEFAULT_POLICY
    n_c, mean_c, var_c = moments(control)
    n_t, mean_t, var_t = moments(treatment)
    x_c = control.successes if isinstance(control, ProportionStats) else 0
    x_t = treatment.successes if isinstance(treatment, ProportionStats) else 0
    return _evaluate(metric, n_c, mean_c, var_c, x_c, n_t, mean_t, var_t, x_t, policy, role, previous)


def _evaluate(metric: str, n_c: int, mean_c: float, var_c: float, x_c: int, n_t: int, mean_t: float,
              var_t: float, x_t: int, policy: Policy, role: str, previous: Mapping[str, Any] | None) -> MetricResult:
    spec = METRICS[metric]
    alpha = policy.significance_level
    kind = spec.kind
    tau = None
    if policy.test_method == "sequential":
        p_prev, ci_prev = _previous_for(previous, metric) if previous else (None, None)
        tau_sd = policy.sequential_tau
        tau2 = tau_sd * tau_sd * 0.5 * (var_c + var_t)  # default_tau2, inlined
        tau = math.sqrt(tau2)
        core = msprt_core(n_c, mean_c, var_c, n_t, mean_t, var_t, alpha, tau2, p_prev, ci_prev)
        method = SEQUENTIAL_METHOD
    elif kind == "proportion":
        core = two_proportion_z_core(n_c, x_c, n_t, x_t, alpha)
        method = "two_proportion_z"
    else:
        core = welch_core(n_c, mean_c, var_c, n_t, mean_t, var_t, alpha)
        method = "welch_t"
    effect, se, stat, p, lo, hi = core.effect, core.se, core.statistic, core.p_value, core.ci_lower, core.ci_upper
    ml, mu, note = core.mult_lower, core.mult_upper, core.note
    log_scale = kind == "logmean"
    rel, rlo, rhi = relative_effect(mean_c, mean_t, var_c, var_t, n_c, n_t, ml, mu, log_scale, lo, hi)
    direction = spec.direction
    if direction > 0:
        ilo, ihi = lo, hi
        rel_imp, rilo, rihi = rel, rlo, rhi
    else:
        ilo, ihi = -hi, -lo
        rel_imp = None if rel is None else -rel
        rilo = None if rhi is None else -rhi
        rihi = None if rlo is None else -rlo
    min_n = policy.min_sample_size if policy.min_sample_size > 2 else 2
    ready = n_c >= min_n and n_t >= min_n
    sig = p <= alpha
    margin = None
    status = None
    if role == "guardrail":
        margin = getattr(policy.guardrail_margins, metric)
        if not ready:
            status = "inconclusive"
            if note is None:
                note = f"fewer than {min_n} observations per arm: guardrail not evaluated"
        else:
            m = math.log1p(margin) if log_scale else margin  # spec.margin_on_test_scale
            if ihi < -m:
                status = "breach"
            elif ilo > -m:
                status = "ok"
            else:
                status = "inconclusive"
    if log_scale:
        mc = math.exp(mean_c) if n_c else 0.0
        mt = math.exp(mean_t) if n_t else 0.0
    else:
        mc, mt = mean_c, mean_t
    return MetricResult(
        metric, spec.label, role, method,
        "higher_is_better" if direction > 0 else "lower_is_better",
        "log_ratio" if log_scale else "difference",
        n_c, n_t, mc, mt, effect, se, stat, p, p, lo, hi, rel, rlo, rhi, rel_imp, rilo, rihi,
        sig and ilo > 0.0, sig and ihi < 0.0, ready, margin, status, tau, note, alpha,
    )


# ---------------------------------------------------------------------------
# wording
# ---------------------------------------------------------------------------

def _interval_word(r: MetricResult) -> str:
    return "CS" if r.method.startswith("msprt") else "CI"


def _pct(x: float | None) -> str:
    if x is None:
        return "n/a"
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return f"{x * 100:+.1f}%"


def _describe(r: MetricResult, alpha: float | None = None) -> str:
    """One-line description of a metric's effect with its interval."""
    level = "" if alpha is None else f"{(1 - alpha) * 100:g}% "
    w = f"{level}{_interval_word(r)}"
    if r.metric == "success":
        return (f"success rate {r.effect * 100:+.1f} pts ({r.mean_control * 100:.1f}% -> "
                f"{r.mean_treatment * 100:.1f}%; {w} {r.ci_lower * 100:+.1f} to {r.ci_upper * 100:+.1f} pts)")
    if r.metric == "latency":
        rel = r.relative_effect or 0.0
        word = "lower" if rel < 0 else "higher"
        return (f"latency {abs(rel) * 100:.1f}% {word} (geometric mean {r.mean_control:.4g} -> "
                f"{r.mean_treatment:.4g} ms; {w} {_pct(r.relative_ci_lower)} to {_pct(r.relative_ci_upper)})")
    rel = "" if r.relative_effect is None else f", {_pct(r.relative_effect)}"
    return (f"{r.label} {r.effect:+.3g}{rel} ({r.mean_control:.3g} -> {r.mean_treatment:.3g}; "
            f"{w} {r.ci_lower:+.3g} to {r.ci_upper:+.3g})")


def _margin_text(r: MetricResult) -> str:
    m = r.margin or 0.0
    if r.metric == "success":
        return f"may not drop by more than {m * 100:g} pts"
    if r.metric == "latency":
        return f"may not rise by more than {m * 100:g}%"
    if METRICS[r.metric].direction > 0:
        return f"may not drop by more than {m:g}"
    return f"may not rise by more than {m:g}"


# ---------------------------------------------------------------------------
# experiment
# ---------------------------------------------------------------------------

def _normalise_previous(previous: Any) -> Mapping[str, Any] | None:
    if previous is None:
        return None
    if isinstance(previous, ExperimentResult):
        return previous.state
    if isinstance(previous, Mapping) and "state" in previous and isinstance(previous["state"], Mapping):
        return previous["state"]
    if isinstance(previous, Mapping) and "metrics" in previous and isinstance(previous["metrics"], Mapping):
        return previous["metrics"]
    return previous


@lru_cache(maxsize=16384)
def _planned_n(e: float, alpha: float, power: float, ratio: float, tau_sd: float | None) -> float:
    """Control-arm sample size for standardised effect ``e`` (sequential when ``tau_sd``)."""
    if tau_sd is None:
        return fixed_horizon_sample_size(e, alpha, power, ratio)
    return _sequential_n(e, alpha, power, ratio, tau_sd)


def _round3(x: float) -> float:
    """``x`` rounded to 3 significant digits (x > 0)."""
    return round(x, 2 - math.floor(math.log10(x)))


def _required(kind: str, n_c: int, mean_c: float, var_c: float, n_t: int, var_t: float,
              policy: Policy, k: int) -> tuple[int, int]:
    """Per-arm sample sizes the policy's minimum detectable effect needs at its power,
    floored by ``min_sample_size``.  Alpha is Bonferroni-split across ``k``
    Holm-tested primaries (planning only).  The standardised effect is rounded
    to 3 significant digits so the result can be cached: a planning figure
    whose inputs (observed sd, control mean) are far noisier than 0.1 %."""
    floor = policy.min_sample_size
    if n_c < 2 or n_t < 2:
        return floor, floor
    mde_rel = policy.minimum_detectable_effect
    mde = math.log1p(mde_rel) if kind == "logmean" else mde_rel * abs(mean_c)  # minimum_detectable_effect_on_test_scale
    var = 0.5 * (var_c + var_t)
    if mde <= 0.0 or var <= 0.0:
        return floor, floor
    split = policy.traffic_split
    ratio = split / (1.0 - split)
    req = _planned_n(_round3(mde / math.sqrt(var)), policy.significance_level / k, policy.power, ratio,
                     policy.sequential_tau if policy.test_method == "sequential" else None)
    if req > 1e12:
        req = 1e12
    req_c = math.ceil(req - 1e-9)
    req_t = math.ceil(req * ratio - 1e-9)
    return (req_c if req_c > floor else floor), (req_t if req_t > floor else floor)


def evaluate_experiment(
    control: ArmStats,
    treatment: ArmStats,
    policy: Policy | None = None,
    previous: Any = None,
    *,
    previous_p_values: Mapping[str, float] | None = None,
) -> ExperimentResult:
    """Evaluate an experiment from the cumulative statistics of its two arms.

    ``policy``: a :class:`Policy` (default ``Policy()``: sequential, alpha
    0.05, ``feedback_type="all"``).  ``previous``: the previous look of the
    same experiment, for the always-valid sequential test -- an
    :class:`ExperimentResult`, its ``to_dict()``, its ``state``
    (``{metric: {"p_value", "ci_lower", "ci_upper"}}``) or just
    ``{metric: p_value}`` (``previous_p_values`` is an alias).  Ignored by
    the fixed-horizon test.  The previous look must use the same policy.
    """
    policy = policy or _DEFAULT_POLICY
    prev = _normalise_previous(previous if previous is not None else previous_p_values)
    if policy.test_method != "sequential":
        prev = None
    alpha = policy.significance_level
    prims = primary_metrics(policy.feedback_type)
    nc_exec, nt_exec = control.n, treatment.n
    srm_stat, srm_p = srm_chi_square(nc_exec, nt_exec, policy.traffic_split)
    srm_ok = srm_p >= policy.srm_threshold

    sequential = policy.test_method == "sequential"
    gate = policy.min_sample_size if policy.min_sample_size > 2 else 2
    results: dict[str, MetricResult] = {}
    primary_moments: list[tuple[str, int, float, float, int, float]] = []
    for m in METRIC_ORDER:
        c, t = getattr(control, m), getattr(treatment, m)
        if c is None and t is None:
            continue
        n_c, mean_c, var_c = moments(c)
        n_t, mean_t, var_t = moments(t)
        if n_c == 0 and n_t == 0:
            continue  # no data for this metric in either arm
        if m == "success":
            x_c = c.successes if c is not None else 0
            x_t = t.successes if t is not None else 0
        else:
            x_c = x_t = 0
        role = "primary" if m in prims else "guardrail"
        results[m] = _evaluate(m, n_c, mean_c, var_c, x_c, n_t, mean_t, var_t, x_t, policy, role, prev)
        if role == "primary":
            primary_moments.append((m, n_c, mean_c, var_c, n_t, var_t))
    avail = [pm[0] for pm in primary_moments]
    k = len(avail)
    if k > 1:  # Holm across the primaries
        prim = [results[m] for m in avail]
        for r, a in zip(prim, holm_adjust([r.p_value for r in prim])):
            r.adjusted_p_value = a
            sig = a <= alpha
            ilo, ihi = (r.ci_lower, r.ci_upper) if r.direction == "higher_is_better" else (-r.ci_upper, -r.ci_lower)
            r.significant_improvement = sig and ilo > 0.0
            r.significant_harm = sig and ihi < 0.0

    # sample size plan and gates
    required = policy.min_sample_size
    additional = 0
    not_ready: list[tuple[int, MetricResult, tuple[int, int]]] = []
    for m, n_c, mean_c, var_c, n_t, var_t in primary_moments:
        req_c, req_t = _required(METRICS[m].kind, n_c, mean_c, var_c, n_t, var_t, policy, k)
        if req_c > required:
            required = req_c
        if req_t > required:
            required = req_t
        short = max(req_c - n_c, req_t - n_t)
        if short > additional:
            additional = short
        gate_c, gate_t = (gate, gate) if sequential else (max(2, req_c), max(2, req_t))
        short = max(gate_c - n_c, gate_t - n_t)
        if short > 0:
            not_ready.append((short, results[m], (gate_c, gate_t)))

    prim_results = [results[m] for m in avail]
    improving = [r for r in prim_results if r.significant_improvement]
    harmed = [r for r in prim_results if r.significant_harm]
    breaches = [r for r in results.values() if r.guardrail_status == "breach"]
    if improving:
        lead = min(improving, key=lambda r: r.adjusted_p_value)
    elif harmed:
        lead = min(harmed, key=lambda r: r.adjusted_p_value)
    elif prim_results:
        lead = min(prim_results, key=lambda r: r.adjusted_p_value)
    else:
        lead = None

    n_txt = f"n={nc_exec}/{nt_exec}"
    holm_txt = f" (Holm-adjusted over {len(avail)} primaries)" if len(avail) > 1 else ""
    if not srm_ok:
        rec = "invalid"
        s = policy.traffic_split
        reason = (f"sample-ratio mismatch: {nc_exec}/{nt_exec} executions vs the planned "
                  f"{(1 - s) * 100:g}/{s * 100:g} split (chi-square p={srm_p:.2g} < {policy.srm_threshold:g}); "
                  f"no decision")
    elif lead is None:
        rec = "continue"
        reason = f"no data yet for the primary metric(s) {', '.join(prims)}; {n_txt}"
    elif not_ready:
        rec = "continue"
        _short, r, (gc, gt) = max(not_ready, key=lambda x: x[0])
        why = ("min_sample_size" if policy.test_method == "sequential"
               else f"fixed-horizon plan for a {policy.minimum_detectable_effect * 100:g}% effect "
                    f"at {policy.power * 100:g}% power")
        reason = (f"collecting data: {r.label} has n={r.n_control}/{r.n_treatment}, needs "
                  f"{gc}/{gt} per arm ({why})")
    elif harmed or breaches:
        rec = "reject"
        parts = []
        for r in harmed:
            parts.append(f"significant harm on primary {_describe(r, alpha)}, p={r.adjusted_p_value:.3g} <= "
                         f"{alpha:g}{holm_txt}")
        for r in breaches:
            parts.append(f"guardrail breach: {_describe(r, alpha)}; {r.label} {_margin_text(r)}")
        reason = "; ".join(parts) + f"; {n_txt}"
    elif improving:
        conf = 1.0 - lead.adjusted_p_value
        desc = f"{_describe(lead, alpha)}, p={lead.adjusted_p_value:.3g} <= {alpha:g}{holm_txt}"
        if conf >= policy.auto_apply_threshold:
            rec = "apply"
            guards = [r for r in results.values() if r.role == "guardrail"]
            if guards:
                inc = [r.label for r in guards if r.guardrail_status != "ok"]
                g_txt = "guardrails hold" + (f" (inconclusive: {', '.join(inc)})" if inc else "")
            else:
                g_txt = "no guardrail data"
            reason = f"{desc}, confidence {conf:.4g} >= {policy.auto_apply_threshold:g}; {g_txt}; {n_txt}"
        else:
            rec = "continue"
            reason = (f"{desc}, but confidence {conf:.4g} < auto_apply_threshold "
                      f"{policy.auto_apply_threshold:g}; {n_txt}")
    else:
        rec = "continue"
        more = (f"about {additional} more executions per arm for {policy.power * 100:g}% power at a "
                f"{policy.minimum_detectable_effect * 100:g}% effect" if additional > 0
                else "planned sample size reached")
        reason = (f"no significant difference yet: {_describe(lead, alpha)}, p={lead.adjusted_p_value:.3g} > "
                  f"{alpha:g}{holm_txt}; {more}; {n_txt}")

    decision = rec
    needs_review = False
    if not policy.enable_ab_testing:
        decision = "continue" if rec != "invalid" else "invalid"
        reason = f"observe only (policy '{policy.name}' runs no experiments); statistics say {rec}: {reason}"
    elif rec == "apply" and (not policy.auto_apply or policy.require_review):
        decision = "continue"
        needs_review = True
        why = "does not auto-apply" if not policy.auto_apply else "requires review"
        reason = f"awaiting human review (policy '{policy.name}' {why}); evidence supports applying: {reason}"

    if lead is not None:
        p_value = lead.adjusted_p_value
        perf = lead.relative_improvement if lead.relative_improvement is not None else 0.0
    else:
        p_value, perf = 1.0, 0.0
    return ExperimentResult(
        decision=decision, reason=reason, recommendation=rec, needs_review=needs_review,
        policy=policy.name, feedback_type=policy.feedback_type, test_method=policy.test_method,
        significance_level=alpha, primary_metrics=prims, lead_metric=None if lead is None else lead.metric,
        metrics=results, n_control=nc_exec, n_treatment=nt_exec, srm_chi_square=srm_stat,
        srm_p_value=srm_p, srm_passed=srm_ok, required_sample_per_arm=int(required),
        additional_samples_needed=int(max(0, additional)), p_value=p_value,
        confidence_score=1.0 - p_value, statistically_significant=p_value <= alpha,
        performance_delta=perf, sample_size=nc_exec + nt_exec,
    )
