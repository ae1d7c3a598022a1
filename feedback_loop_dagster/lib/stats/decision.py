"""The decision rule (DESIGN.md section 3) and the result of an experiment.

Entry point: :func:`evaluate_experiment` (control, treatment, policy) ->
:class:`ExperimentResult`.

Rule (risk-aware, after Schultzberg, Ankargren and Franberg, "Risk-aware
product decisions in A/B tests with multiple metrics", 2024)
--------------------------------------------------------------------------
Each metric with data is tested on its scale (difference of success rates;
difference of log-means for latency, i.e. the ratio of geometric means;
difference of means for quality, rating and retries), by the policy's test:
the always-valid mSPRT by default, or fixed-horizon Welch / two-proportion z.
The primary metric(s) of ``feedback_type`` are tested for a difference; every
other metric is a guardrail with a non-inferiority margin.

* ``invalid`` -- the sample-ratio-mismatch test rejects the planned split
  (p < ``srm_threshold``): no decision, whatever the rest says.
* ``continue`` -- a primary metric has fewer executions per arm than the gate
  (``min_sample_size``; for the fixed-horizon test the planned sample size,
  because that test is only valid at its horizon).
* ``reject`` -- *deterioration*: a primary metric is significantly worse
  (Holm-adjusted p <= alpha and its interval below 0), or a guardrail is
  breached (its interval lies entirely beyond its margin on the harmful side).
* ``apply`` -- at least one primary is significantly better (Holm-adjusted),
  ``confidence_score = 1 - p >= auto_apply_threshold``, and **every guardrail
  has shown non-inferiority**: its always-valid one-sided bound
  (:mod:`.noninferiority`) lies above ``-margin``.  A guardrail that has not
  shown it yet keeps the experiment running, whatever its point estimate;
  "no significant harm yet" is never enough.
* ``inconclusive`` -- the experiment reached ``max_experiment_days`` (pass
  ``days_run``) or ``max_sample_per_arm`` without a decision: control is kept.
* ``continue`` otherwise.

Error control.  Applying a candidate that does not improve any primary needs a
false significant improvement: the primaries are Holm-adjusted (their
family-wise error <= alpha; "at least one significant" is the Bonferroni test
at alpha / k).  Applying a candidate with some guardrail truly worse than its
margin needs that guardrail's non-inferiority test to be wrong, which happens
with probability <= alpha however often one looks; since *every* guardrail must
pass (an intersection-union test) no correction across guardrails is needed.
So whichever of these is true, the candidate is applied with probability at
most alpha.  What the guardrails cost is power: the sample plan splits beta
over the primary and the ``G`` guardrails (``beta / (G + 1)`` each, as in the
paper) and ``required_sample_per_arm`` is the largest need over all of them.
Deterioration is tested only against 0 for primaries; a guardrail that is
significantly worse but within its margin is a trade-off the margin accepts
(e.g. more retries for more successes) and is reported as "worse".

Policies that do not auto-apply (``auto_apply=False``) or that
``require_review`` turn an "apply" verdict into ``decision="continue"`` with
``needs_review=True``; ``recommendation`` keeps the statistical verdict.  With
``enable_ab_testing=False`` (monitoring) the decision is ``continue`` (observe
only) unless the result is ``invalid``.

Sequential looks: pass the previous result (or its ``state``/``to_dict()``)
as ``previous`` so that p-values stay monotone and intervals and
non-inferiority bounds are intersected across looks.  Only looks at which the
metric reached ``min_sample_size`` in both arms enter the state: the plug-in
variance of a smaller look is too unreliable to pin later intervals.  An arm
whose values are all equal (5/5 successes, no retries) is tested with the
variance it would have with one more execution one unit away, so a constant
look never yields a point interval or p = 0 by itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, Mapping, NamedTuple

from . import reasons
from .estimates import INF, CoreResult, json_safe, relative_effect
from .fixed_horizon import normal_quantile, two_proportion_z_core, welch_core
from .metrics import METRIC_ORDER, METRICS, primary_metrics
from .noninferiority import mixture_tau2, noninferiority_bound, noninferiority_sample_size
from .policy import Policy
from .power import _sequential_n, fixed_horizon_sample_size, minimum_detectable_effect_on_test_scale
from .sequential import METHOD as SEQUENTIAL_METHOD
from .sequential import default_tau2, msprt_core
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

DECISIONS = ("apply", "reject", "continue", "inconclusive", "invalid")
# What a non-finite MetricResult field stored as JSON null stood for.
_UNBOUNDED = {"ci_lower": -INF, "ci_upper": INF, "se": INF}
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

    Guardrails: ``margin`` (policy units), ``ni_bound`` (the always-valid
    one-sided bound on the harmful side, test scale, treatment - control: a
    lower bound for higher-is-better metrics, an upper bound for
    lower-is-better ones) and ``guardrail_status``: ``ok`` (non-inferiority
    shown), ``breach`` (worse than the margin) or ``inconclusive``.
    ``required_per_arm``: executions per arm this metric needs (its share of
    the sample plan).  People read the effect through :mod:`.units`
    (``summary``).
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
    ni_bound: float | None
    tau: float | None
    note: str | None
    significance_level: float = 0.05
    required_per_arm: int | None = None

    @property
    def improvement_ci(self) -> tuple[float, float]:
        """Interval of the improvement (positive = better) on the test's scale."""
        if METRICS[self.metric].direction > 0:
            return self.ci_lower, self.ci_upper
        return -self.ci_upper, -self.ci_lower

    @property
    def summary(self) -> str:
        return reasons.described(self)

    def state(self) -> dict[str, float | None]:
        """What the next look carries: nothing from a look below ``min_sample_size``."""
        if not self.ready:
            return {}
        out = {"p_value": self.p_value, "ci_lower": json_safe(self.ci_lower), "ci_upper": json_safe(self.ci_upper)}
        if self.ni_bound is not None:
            out["ni_bound"] = json_safe(self.ni_bound)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["summary"] = self.summary
        return json_safe(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MetricResult":
        """The result :meth:`to_dict` wrote. JSON has no infinities, so a bound or standard error
        stored as null comes back as the infinity it stood for."""
        values = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        for name, missing in _UNBOUNDED.items():
            if values.get(name) is None:
                values[name] = missing
        return cls(**values)


@dataclass(slots=True)
class ExperimentResult:
    """Decision and evidence of one look at an experiment (JSON: :meth:`to_dict`).

    * ``decision``: what to do now -- ``apply`` (promote the candidate; only
      when the policy auto-applies), ``reject``, ``continue`` (keep
      collecting; see ``needs_review``), ``inconclusive`` (the experiment's
      time or sample is up without a decision: keep control), ``invalid``
      (SRM: fix the experiment, no decision).  ``recommendation`` is the
      statistical verdict before the policy's review / auto-apply switches.
    * ``lead_metric``: the primary metric the seed fields describe (the
      significantly improved one with the smallest adjusted p, else the
      harmed one, else the primary with the smallest adjusted p).
    * ``required_sample_per_arm``: executions per arm the plan needs: the
      largest of the primaries' (the policy's ``minimum_detectable_effect``)
      and the guardrails' (non-inferiority of an unchanged metric) needs, each
      at power ``1 - beta / (G + 1)``, floored by ``min_sample_size``;
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
    days_run: int | None = None

    @property
    def state(self) -> dict[str, dict[str, float | None]]:
        """Per-metric sequential state to pass as ``previous`` at the next look."""
        return {m: r.state() for m, r in self.metrics.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ExperimentResult":
        """The result :meth:`to_dict` wrote (a stored look), for the stages that act on it."""
        values = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        values["metrics"] = {m: MetricResult.from_dict(r) for m, r in d.get("metrics", {}).items()}
        values["primary_metrics"] = tuple(d.get("primary_metrics", ()))
        return cls(**values)

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
# per-metric tests
# ---------------------------------------------------------------------------

class MetricData(NamedTuple):
    """One metric's moments in both arms (``x_*``: successes of a proportion)."""

    metric: str
    n_c: int
    mean_c: float
    var_c: float
    x_c: int
    n_t: int
    mean_t: float
    var_t: float
    x_t: int

    @classmethod
    def of(cls, metric: str, control: Any, treatment: Any) -> "MetricData":
        n_c, mean_c, var_c = moments(control)
        n_t, mean_t, var_t = moments(treatment)
        x_c = control.successes if isinstance(control, ProportionStats) else 0
        x_t = treatment.successes if isinstance(treatment, ProportionStats) else 0
        return cls(metric, n_c, mean_c, var_c, x_c, n_t, mean_t, var_t, x_t)


class Carried(NamedTuple):
    """A metric's state from the previous look."""

    p_value: float | None = None
    ci: tuple[float, float] | None = None
    ni_bound: float | None = None


def _carried(previous: Mapping[str, Any] | None, metric: str) -> Carried:
    v = previous.get(metric) if previous else None
    if v is None:
        return Carried()
    if isinstance(v, (int, float)):
        return Carried(p_value=float(v))
    p = v.get("p_value")
    lo, hi = v.get("ci_lower"), v.get("ci_upper")
    ci = None if (lo is None and hi is None) else (-INF if lo is None else lo, INF if hi is None else hi)
    return Carried(p_value=None if p is None else float(p), ci=ci, ni_bound=v.get("ni_bound"))


def _gate(policy: Policy) -> int:
    return policy.min_sample_size if policy.min_sample_size > 2 else 2


def _spread(n: int, var: float) -> float:
    """The variance a sequential test uses for an arm: the sample variance, or for an arm whose
    values are all equal, the variance with one more execution one unit away, ``n / (n+1)^2``
    (for 0/1 outcomes: one opposite outcome; about the rule of three).  Never 0 for n >= 2."""
    if n >= 2 and var <= 0.0:
        return n / ((n + 1.0) * (n + 1.0))
    return var


def _run_test(d: MetricData, var_c: float, var_t: float, policy: Policy, carried: Carried) -> tuple[CoreResult, str, float | None]:
    """The policy's test on one metric: ``(core result, method, mixture tau)``."""
    alpha = policy.significance_level
    if policy.test_method == "sequential":
        tau2 = default_tau2(var_c, var_t, policy.sequential_tau)
        core = msprt_core(d.n_c, d.mean_c, var_c, d.n_t, d.mean_t, var_t, alpha, tau2, carried.p_value, carried.ci)
        return core, SEQUENTIAL_METHOD, math.sqrt(tau2)
    if METRICS[d.metric].kind == "proportion":
        return two_proportion_z_core(d.n_c, d.x_c, d.n_t, d.x_t, alpha), "two_proportion_z", None
    return welch_core(d.n_c, d.mean_c, var_c, d.n_t, d.mean_t, var_t, alpha), "welch_t", None


def _noninferiority(direction: int, core: CoreResult, margin: float, var_c: float, var_t: float,
                    policy: Policy, carried: Carried) -> float:
    """The one-sided bound on the harmful side, on the test's scale (see :mod:`.noninferiority`):
    the always-valid mixture bound (``tau`` = half the margin), or the fixed-horizon one-sided
    ``1 - alpha`` bound.  Carried across looks as a running max (of the improvement)."""
    alpha = policy.significance_level
    improvement = direction * core.effect
    previous = None if carried.ni_bound is None else direction * carried.ni_bound
    if policy.test_method == "sequential":
        tau2 = mixture_tau2(margin, 0.5 * (var_c + var_t), policy.sequential_tau)
        bound = noninferiority_bound(improvement, core.se * core.se, tau2, alpha, previous)
    elif math.isinf(core.se):
        bound = -INF
    else:
        bound = improvement - normal_quantile(1.0 - alpha) * core.se
    return direction * bound


def _metric_result(d: MetricData, policy: Policy, role: str, previous: Mapping[str, Any] | None) -> MetricResult:
    spec = METRICS[d.metric]
    alpha = policy.significance_level
    gate = _gate(policy)
    ready = d.n_c >= gate and d.n_t >= gate
    sequential = policy.test_method == "sequential"
    carried = _carried(previous, d.metric) if ready and sequential else Carried()
    var_c, var_t = (_spread(d.n_c, d.var_c), _spread(d.n_t, d.var_t)) if sequential else (d.var_c, d.var_t)
    core, method, tau = _run_test(d, var_c, var_t, policy, carried)
    log_scale = spec.kind == "logmean"
    rel, rlo, rhi = relative_effect(d.mean_c, d.mean_t, var_c, var_t, d.n_c, d.n_t, core.mult_lower,
                                    core.mult_upper, log_scale, core.ci_lower, core.ci_upper)
    direction = spec.direction
    if direction > 0:
        ilo, ihi = core.ci_lower, core.ci_upper
        rel_imp, rilo, rihi = rel, rlo, rhi
    else:
        ilo, ihi = -core.ci_upper, -core.ci_lower
        rel_imp = None if rel is None else -rel
        rilo = None if rhi is None else -rhi
        rihi = None if rlo is None else -rlo
    sig = core.p_value <= alpha
    note = core.note
    margin = ni_bound = status = None
    if role == "guardrail":
        margin = policy.guardrail_margins.for_metric(d.metric)
        m = spec.margin_on_test_scale(margin)
        ni_bound = _noninferiority(direction, core, m, var_c, var_t, policy, carried)
        if not ready:
            status = "inconclusive"
            note = note or f"fewer than {gate} observations per arm: guardrail not evaluated"
        elif ihi < -m:
            status = "breach"
        elif direction * ni_bound > -m:
            status = "ok"
        else:
            status = "inconclusive"
    if log_scale:
        mean_c = math.exp(d.mean_c) if d.n_c else 0.0
        mean_t = math.exp(d.mean_t) if d.n_t else 0.0
    else:
        mean_c, mean_t = d.mean_c, d.mean_t
    return MetricResult(
        metric=d.metric, label=spec.label, role=role, method=method,
        direction="higher_is_better" if direction > 0 else "lower_is_better",
        scale="log_ratio" if log_scale else "difference",
        n_control=d.n_c, n_treatment=d.n_t, mean_control=mean_c, mean_treatment=mean_t,
        effect=core.effect, se=core.se, statistic=core.statistic, p_value=core.p_value,
        adjusted_p_value=core.p_value, ci_lower=core.ci_lower, ci_upper=core.ci_upper,
        relative_effect=rel, relative_ci_lower=rlo, relative_ci_upper=rhi,
        relative_improvement=rel_imp, relative_improvement_ci_lower=rilo, relative_improvement_ci_upper=rihi,
        significant_improvement=sig and ilo > 0.0, significant_harm=sig and ihi < 0.0, ready=ready,
        margin=margin, guardrail_status=status, ni_bound=ni_bound, tau=tau, note=note, significance_level=alpha,
    )


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
    non-inferiority test against the policy's margin.
    """
    return _metric_result(MetricData.of(metric, control, treatment), policy or _DEFAULT_POLICY, role, previous)


def _metric_results(control: ArmStats, treatment: ArmStats, policy: Policy,
                    previous: Mapping[str, Any] | None) -> tuple[dict[str, MetricResult], dict[str, MetricData]]:
    """Every metric with data in either arm, in ``METRIC_ORDER``."""
    prims = primary_metrics(policy.feedback_type)
    results: dict[str, MetricResult] = {}
    data: dict[str, MetricData] = {}
    for m in METRIC_ORDER:
        c, t = getattr(control, m), getattr(treatment, m)
        if c is None and t is None:
            continue
        d = MetricData.of(m, c, t)
        if d.n_c == 0 and d.n_t == 0:
            continue  # no data for this metric in either arm
        data[m] = d
        results[m] = _metric_result(d, policy, "primary" if m in prims else "guardrail", previous)
    return results, data


# ---------------------------------------------------------------------------
# multiplicity
# ---------------------------------------------------------------------------

def _adjust_primaries(primaries: list[MetricResult], alpha: float) -> None:
    """Holm across the primaries: adjusted p-values and the significance flags that follow."""
    if len(primaries) < 2:
        return
    for r, a in zip(primaries, holm_adjust([r.p_value for r in primaries])):
        r.adjusted_p_value = a
        ilo, ihi = r.improvement_ci
        r.significant_improvement = a <= alpha and ilo > 0.0
        r.significant_harm = a <= alpha and ihi < 0.0


# ---------------------------------------------------------------------------
# sample plan
# ---------------------------------------------------------------------------

class SamplePlan(NamedTuple):
    """Executions per arm the experiment needs (the largest over its metrics)."""

    required_control: int
    required_treatment: int
    additional: int  # more executions the shorter arm needs
    power: float  # per metric: 1 - beta / (G + 1)
    guardrails: int


@lru_cache(maxsize=16384)
def _planned_n(e: float, alpha: float, power: float, ratio: float, tau_sd: float | None) -> float:
    """Control-arm sample size for standardised effect ``e`` (sequential when ``tau_sd``)."""
    if tau_sd is None:
        return fixed_horizon_sample_size(e, alpha, power, ratio)
    return _sequential_n(e, alpha, power, ratio, tau_sd)


@lru_cache(maxsize=16384)
def _planned_ni_n(e: float, alpha: float, power: float, ratio: float, sequential: bool) -> float:
    return noninferiority_sample_size(e, alpha, power, ratio, sequential)


def _round3(x: float) -> float:
    """``x`` rounded to 3 significant digits (x > 0): planning inputs (an observed sd, a control
    mean) are far noisier than 0.1 %, and the rounding lets the plans be cached."""
    return round(x, 2 - math.floor(math.log10(x)))


def _per_arm(req: float, ratio: float) -> tuple[int, int]:
    req = min(req, 1e12)
    return math.ceil(req - 1e-9), math.ceil(req * ratio - 1e-9)


def _primary_need(kind: str, mean_c: float, var_c: float, var_t: float, policy: Policy, alpha: float,
                  power: float) -> tuple[int, int] | None:
    """Observations per arm the policy's minimum detectable effect needs at ``power`` and level
    ``alpha``; ``None`` when there is no spread or effect to plan with."""
    mde = minimum_detectable_effect_on_test_scale(kind, policy.minimum_detectable_effect, mean_c)
    var = 0.5 * (var_c + var_t)
    if mde is None or mde <= 0.0 or var <= 0.0:
        return None
    ratio = policy.traffic_split / (1.0 - policy.traffic_split)
    tau_sd = policy.sequential_tau if policy.test_method == "sequential" else None
    return _per_arm(_planned_n(_round3(mde / math.sqrt(var)), alpha, power, ratio, tau_sd), ratio)


def _guardrail_need(metric: str, var_c: float, var_t: float, policy: Policy, power: float) -> tuple[int, int] | None:
    """Observations per arm to show non-inferiority of an unchanged guardrail at ``power``."""
    margin = METRICS[metric].margin_on_test_scale(policy.guardrail_margins.for_metric(metric))
    var = 0.5 * (var_c + var_t)
    if margin <= 0.0 or var <= 0.0:
        return None
    ratio = policy.traffic_split / (1.0 - policy.traffic_split)
    e = _round3(margin / math.sqrt(var))
    return _per_arm(_planned_ni_n(e, policy.significance_level, power, ratio,
                                  policy.test_method == "sequential"), ratio)


def _in_executions(need: int, observations: int, executions: int) -> int:
    """A need in a metric's observations as executions of the arm (ratings come from a share)."""
    if observations <= 0 or executions <= observations:
        return need
    return math.ceil(need * executions / observations)


def _sample_plan(results: dict[str, MetricResult], data: dict[str, MetricData], control: ArmStats,
                 treatment: ArmStats, policy: Policy) -> SamplePlan:
    """Each metric's need (sets ``required_per_arm``), the experiment's largest, and the power
    split: the primary and the ``G`` guardrails each get ``beta / (G + 1)``."""
    primaries = [m for m, r in results.items() if r.role == "primary"]
    guardrails = [m for m, r in results.items() if r.role == "guardrail"]
    power = 1.0 - (1.0 - policy.power) / (len(guardrails) + 1)
    alpha_primary = policy.significance_level / max(1, len(primaries))  # Bonferroni, for planning
    floor = policy.min_sample_size
    need_c = need_t = floor
    additional = max(floor - control.n, floor - treatment.n)
    for m, r in results.items():
        d = data[m]
        if d.n_c < 2 or d.n_t < 2:
            continue
        var_c, var_t = _spread(d.n_c, d.var_c), _spread(d.n_t, d.var_t)
        if r.role == "primary":
            need = _primary_need(METRICS[m].kind, d.mean_c, var_c, var_t, policy, alpha_primary, power)
        else:
            need = _guardrail_need(m, var_c, var_t, policy, power)
        if need is None:
            continue
        req_c = max(floor, _in_executions(need[0], d.n_c, control.n))
        req_t = max(floor, _in_executions(need[1], d.n_t, treatment.n))
        r.required_per_arm = max(req_c, req_t)
        need_c, need_t = max(need_c, req_c), max(need_t, req_t)
        additional = max(additional, req_c - control.n, req_t - treatment.n)
    return SamplePlan(need_c, need_t, max(0, additional), power, len(guardrails))


def _more_for(r: MetricResult, control: ArmStats, treatment: ArmStats, policy: Policy, power: float) -> int | None:
    """How many more executions per arm a pending guardrail needs: its plan's shortfall; once the
    plan is reached, what the observed effect needs (the plan assumes an unchanged metric);
    ``None`` when the observed effect is beyond the margin."""
    executions = min(control.n, treatment.n)
    if r.required_per_arm is not None and r.required_per_arm > executions:
        return r.required_per_arm - executions
    spec = METRICS[r.metric]
    margin = spec.margin_on_test_scale(r.margin or 0.0)
    distance = margin + spec.direction * r.effect
    if not (distance > 0.0 and margin > 0.0 and 0.0 < r.se < INF):
        return None
    sd = r.se / math.sqrt(1.0 / r.n_control + 1.0 / r.n_treatment)
    ratio = policy.traffic_split / (1.0 - policy.traffic_split)
    need = noninferiority_sample_size(margin / sd, policy.significance_level, power, ratio,
                                      policy.test_method == "sequential", distance_sd=distance / sd)
    req_c, req_t = _per_arm(need, ratio)
    more = max(_in_executions(req_c, r.n_control, control.n) - control.n,
               _in_executions(req_t, r.n_treatment, treatment.n) - treatment.n)
    return max(more, 1)


# ---------------------------------------------------------------------------
# verdict
# ---------------------------------------------------------------------------

class Verdict(NamedTuple):
    recommendation: str
    reason: str
    lead: MetricResult | None


def _lead(primaries: list[MetricResult]) -> MetricResult | None:
    improving = [r for r in primaries if r.significant_improvement]
    harmed = [r for r in primaries if r.significant_harm]
    pool = improving or harmed or primaries
    return min(pool, key=lambda r: r.adjusted_p_value) if pool else None


def _verdict(results: dict[str, MetricResult], plan: SamplePlan, control: ArmStats, treatment: ArmStats,
             srm_p: float, policy: Policy) -> Verdict:
    alpha = policy.significance_level
    nc, nt = control.n, treatment.n
    sequential = policy.test_method == "sequential"
    looks = reasons.looks_text(nc, nt, alpha, sequential)
    primaries = [r for r in results.values() if r.role == "primary"]
    guardrails = [r for r in results.values() if r.role == "guardrail"]
    holm = len(primaries)
    lead = _lead(primaries)
    if srm_p < policy.srm_threshold:
        return Verdict("invalid", reasons.srm_reason(nc, nt, policy.traffic_split, srm_p, policy.srm_threshold), lead)
    if lead is None:
        return Verdict("continue", reasons.no_data_reason(primary_metrics(policy.feedback_type), looks), None)
    gate_c, gate_t = ((_gate(policy),) * 2 if sequential
                      else (max(2, plan.required_control), max(2, plan.required_treatment)))
    short = [r for r in primaries if r.n_control < gate_c or r.n_treatment < gate_t]
    if short:
        r = max(short, key=lambda x: max(gate_c - x.n_control, gate_t - x.n_treatment))
        why = ("min_sample_size" if sequential
               else f"fixed-horizon plan for a {policy.minimum_detectable_effect * 100:g}% effect at "
                    f"{policy.power * 100:g}% power, covering the guardrails")
        return Verdict("continue", reasons.collecting_reason(r, gate_c, gate_t, why), lead)
    harmed = [r for r in primaries if r.significant_harm]
    breached = [r for r in guardrails if r.guardrail_status == "breach"]
    if harmed or breached:
        return Verdict("reject", reasons.harm_reason(harmed, breached, alpha, holm, looks), lead)
    if not lead.significant_improvement:
        return Verdict("continue", reasons.no_difference_reason(lead, plan.additional, policy, plan.guardrails,
                                                                holm, looks), lead)
    confidence = 1.0 - lead.adjusted_p_value
    if confidence < policy.auto_apply_threshold:
        return Verdict("continue", reasons.threshold_reason(lead, confidence, policy.auto_apply_threshold, alpha,
                                                            holm, looks), lead)
    pending = [(r, _more_for(r, control, treatment, policy, plan.power)) for r in guardrails
               if r.guardrail_status != "ok"]
    if pending:
        return Verdict("continue", reasons.pending_reason(lead, pending, _gate(policy), alpha, holm, looks), lead)
    return Verdict("apply", reasons.apply_reason(lead, confidence, policy.auto_apply_threshold, guardrails, alpha,
                                                 holm, looks), lead)


def _end_if_exhausted(verdict: Verdict, control: ArmStats, treatment: ArmStats, days_run: int | None,
                      policy: Policy) -> Verdict:
    """A verdict of ``continue`` becomes ``inconclusive`` once the experiment's time or sample is up."""
    if verdict.recommendation != "continue":
        return verdict
    out_of_time = policy.max_experiment_days is not None and days_run is not None and days_run >= policy.max_experiment_days
    cap = policy.max_sample_per_arm
    out_of_sample = cap is not None and control.n >= cap and treatment.n >= cap
    if not (out_of_time or out_of_sample):
        return verdict
    return Verdict("inconclusive", reasons.inconclusive_reason(verdict.reason, days_run, control.n, treatment.n,
                                                               policy), verdict.lead)


def _policy_switches(verdict: Verdict, policy: Policy) -> tuple[str, bool, str]:
    """``(decision, needs_review, reason)``: monitoring observes only; review and manual
    policies hold an apply verdict for a person."""
    rec = verdict.recommendation
    if not policy.enable_ab_testing:
        return ("invalid" if rec == "invalid" else "continue"), False, reasons.observe_reason(policy.name, rec, verdict.reason)
    if rec == "apply" and (not policy.auto_apply or policy.require_review):
        return "continue", True, reasons.review_reason(policy.name, policy.auto_apply, verdict.reason)
    return rec, False, verdict.reason


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


def evaluate_experiment(
    control: ArmStats,
    treatment: ArmStats,
    policy: Policy | None = None,
    previous: Any = None,
    *,
    previous_p_values: Mapping[str, float] | None = None,
    days_run: int | None = None,
) -> ExperimentResult:
    """Evaluate an experiment from the cumulative statistics of its two arms.

    ``policy``: a :class:`Policy` (default ``Policy()``: sequential, alpha
    0.05, ``feedback_type="all"``).  ``previous``: the previous look of the
    same experiment, for the always-valid sequential test -- an
    :class:`ExperimentResult`, its ``to_dict()``, its ``state``
    (``{metric: {"p_value", "ci_lower", "ci_upper", "ni_bound"}}``) or just
    ``{metric: p_value}`` (``previous_p_values`` is an alias).  Ignored by
    the fixed-horizon test.  The previous look must use the same policy.
    ``days_run``: days since the experiment started (1 on its first day), for
    ``max_experiment_days``.
    """
    policy = policy or _DEFAULT_POLICY
    prev = _normalise_previous(previous if previous is not None else previous_p_values)
    srm_stat, srm_p = srm_chi_square(control.n, treatment.n, policy.traffic_split)
    results, data = _metric_results(control, treatment, policy, prev)
    _adjust_primaries([r for r in results.values() if r.role == "primary"], policy.significance_level)
    plan = _sample_plan(results, data, control, treatment, policy)
    verdict = _end_if_exhausted(_verdict(results, plan, control, treatment, srm_p, policy), control, treatment,
                                days_run, policy)
    decision, needs_review, reason = _policy_switches(verdict, policy)
    lead = verdict.lead
    p_value = lead.adjusted_p_value if lead is not None else 1.0
    perf = lead.relative_improvement if lead is not None and lead.relative_improvement is not None else 0.0
    return ExperimentResult(
        decision=decision, reason=reason, recommendation=verdict.recommendation, needs_review=needs_review,
        policy=policy.name, feedback_type=policy.feedback_type, test_method=policy.test_method,
        significance_level=policy.significance_level, primary_metrics=primary_metrics(policy.feedback_type),
        lead_metric=None if lead is None else lead.metric, metrics=results, n_control=control.n,
        n_treatment=treatment.n, srm_chi_square=srm_stat, srm_p_value=srm_p,
        srm_passed=srm_p >= policy.srm_threshold,
        required_sample_per_arm=int(max(plan.required_control, plan.required_treatment)),
        additional_samples_needed=int(plan.additional), p_value=p_value, confidence_score=1.0 - p_value,
        statistically_significant=p_value <= policy.significance_level, performance_delta=perf,
        sample_size=control.n + treatment.n, days_run=days_run,
    )
