"""Statistical engine of the feedback loop: honest A/B validation under continuous looks.

Pure module (numpy, scipy, pydantic; no Dagster, no database).  Typical use::

    from feedback_loop_dagster.lib.stats import ArmStats, Policy, evaluate_experiment

    control = ArmStats.from_frame(df[df.pattern_version == "v1"])
    treatment = ArmStats.from_frame(df[df.pattern_version == "v2"])
    result = evaluate_experiment(control, treatment, Policy.preset("production"),
                                 previous=previous_result_dict)  # None at the first look
    result.decision, result.reason, result.to_dict()

See :mod:`.decision` for the rule, :mod:`.sequential` for the default test,
:mod:`.noninferiority` for the guardrails' evidence, :mod:`.units` for
how an effect is written for people (``format_effect(result.metrics["success"])``).
"""

from .decision import DECISIONS, ExperimentResult, MetricResult, evaluate_experiment, evaluate_metric, holm_adjust
from .metrics import METRIC_ORDER, METRICS, PRIMARY_METRICS, MetricSpec, guardrail_metrics, primary_metrics
from .noninferiority import noninferiority_sample_size
from .policy import PRESET_NAMES, PRESETS, GuardrailMargins, Policy, get_preset
from .power import fixed_horizon_sample_size, minimum_detectable_effect_on_test_scale, sequential_sample_size
from .sequential import (
    DEFAULT_TAU_SD,
    msprt_log_likelihood_ratio,
    msprt_update,
)
from .srm import SRM_THRESHOLD, srm_chi_square, srm_p_value
from .sufficient import ArmStats, LogMeanStats, MeanStats, ProportionStats
from .units import EffectInUnit, effect_in_unit, format_effect, format_margin, verdict_of

__all__ = [
    "ArmStats",
    "DECISIONS",
    "DEFAULT_TAU_SD",
    "EffectInUnit",
    "ExperimentResult",
    "GuardrailMargins",
    "LogMeanStats",
    "METRICS",
    "METRIC_ORDER",
    "MeanStats",
    "MetricResult",
    "MetricSpec",
    "PRESETS",
    "PRESET_NAMES",
    "PRIMARY_METRICS",
    "Policy",
    "ProportionStats",
    "SRM_THRESHOLD",
    "effect_in_unit",
    "evaluate_experiment",
    "evaluate_metric",
    "fixed_horizon_sample_size",
    "format_effect",
    "format_margin",
    "get_preset",
    "guardrail_metrics",
    "holm_adjust",
    "minimum_detectable_effect_on_test_scale",
    "msprt_log_likelihood_ratio",
    "msprt_update",
    "noninferiority_sample_size",
    "primary_metrics",
    "sequential_sample_size",
    "srm_chi_square",
    "srm_p_value",
    "verdict_of",
]
