"""Sample-ratio mismatch (SRM): are the arms' sizes consistent with the planned split?

A chi-square goodness-of-fit test (1 degree of freedom) of the executions
counted in each arm against the planned treatment share.  A mismatch means the
assignment or the logging is broken, so the comparison is not trustworthy:
below ``threshold`` (default 0.001, the usual SRM alarm level, e.g. Fabijan
et al., "Diagnosing Sample Ratio Mismatch in Online Controlled Experiments",
KDD 2019) the experiment result is ``invalid``.

The p-value is ``chi2.sf(stat, 1) = erfc(sqrt(stat / 2))``; it equals
``scipy.stats.chisquare([n_c, n_t], [N (1 - s), N s]).pvalue`` (tested).
"""

from __future__ import annotations

import math

__all__ = ["SRM_THRESHOLD", "srm_chi_square", "srm_p_value"]

SRM_THRESHOLD = 0.001


def srm_chi_square(n_control: int, n_treatment: int, treatment_share: float = 0.5) -> tuple[float, float]:
    """``(chi-square statistic, p-value)``; ``(0, 1)`` when both arms are empty."""
    if not 0.0 < treatment_share < 1.0:
        raise ValueError(f"treatment_share must be in (0, 1), got {treatment_share}")
    if n_control < 0 or n_treatment < 0:
        raise ValueError("arm counts must be non-negative")
    total = n_control + n_treatment
    if total == 0:
        return 0.0, 1.0
    e_t = total * treatment_share
    e_c = total - e_t
    stat = (n_control - e_c) ** 2 / e_c + (n_treatment - e_t) ** 2 / e_t
    return stat, math.erfc(math.sqrt(stat / 2.0))


def srm_p_value(n_control: int, n_treatment: int, treatment_share: float = 0.5) -> float:
    """p-value of the SRM chi-square test (see :func:`srm_chi_square`)."""
    return srm_chi_square(n_control, n_treatment, treatment_share)[1]
