"""Mergeable sufficient statistics for the A/B engine.

Every test in this package works on these objects only, never on rows, so the
statistics of one day can be stored and added to those of another day: the sum
of two statistics is the statistic of the union of their rows.

* :class:`ProportionStats` -- ``(n, successes)`` for the success rate.
* :class:`MeanStats` -- ``(n, total, total_sq)`` for a mean (quality score,
  user rating, retries): what ``COUNT(x), SUM(x), SUM(x * x)`` return in SQL.
* :class:`LogMeanStats` -- a :class:`MeanStats` over ``log(duration_ms)``; the
  latency metric is compared on the log scale (ratio of geometric means).
* :class:`ArmStats` -- the per-metric statistics of one arm of an experiment.

Numerical note: the variance is computed from raw sums,
``(total_sq - total * mean) / (n - 1)``, which loses precision when the
coefficient of variation is tiny.  The result is clamped at zero and a
variance below ``1e-12`` of the second moment is treated as exactly zero, so
constant data gives a variance of exactly 0 (and the tests a defined answer)
rather than a rounding residue.  Latency is stored on the log scale, where the
magnitudes are small, so this costs nothing in practice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = [
    "mean_var",
    "moments",
    "ProportionStats",
    "MeanStats",
    "LogMeanStats",
    "ArmStats",
    "ARM_STAT_TYPES",
]

# Relative threshold under which a variance is considered a rounding residue.
_VAR_REL_EPS = 1e-12


def _clean(values: Any) -> np.ndarray:
    """Float array of the finite entries of ``values`` (None/NaN/inf dropped)."""
    if values is None:
        return np.empty(0, dtype=float)
    if hasattr(values, "to_numpy"):  # pandas, including nullable dtypes with pd.NA
        arr = values.to_numpy(dtype=float, na_value=np.nan)
    else:
        arr = np.asarray(values, dtype=float)
    arr = arr.ravel()
    return arr[np.isfinite(arr)]


def mean_var(n: int, total: float, total_sq: float) -> tuple[float, float]:
    """``(mean, sample variance)`` from ``(n, sum, sum of squares)``.

    The variance is 0.0 when ``n < 2``, clamped at 0, and set to exactly 0
    when it is below ``1e-12`` of the second moment (a rounding residue of
    constant data).  The mean is 0.0 when ``n == 0``.
    """
    if n <= 0:
        return 0.0, 0.0
    m = total / n
    if n < 2:
        return m, 0.0
    ss = total_sq - total * m
    if ss <= 0.0 or ss <= _VAR_REL_EPS * total_sq:
        return m, 0.0
    return m, ss / (n - 1)


def moments(stats: Any) -> tuple[int, float, float]:
    """``(n, mean, variance)`` of a :class:`ProportionStats` (variance ``p(1-p)``)
    or :class:`MeanStats` (sample variance); ``(0, 0, 0)`` for ``None``."""
    if stats is None:
        return 0, 0.0, 0.0
    n = stats.n
    if n <= 0:
        return 0, 0.0, 0.0
    if isinstance(stats, ProportionStats):
        p = stats.successes / n
        return n, p, p * (1.0 - p)
    mean, var = mean_var(n, stats.total, stats.total_sq)
    return n, mean, var


def _as_count(value: Any, name: str) -> int:
    as_int = int(value)
    if as_int != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return as_int


def _is_zero(other: Any) -> bool:
    """True for the neutral elements accepted on the left of ``+`` (``None``, ``0``)."""
    return other is None or (isinstance(other, (int, float)) and other == 0)


@dataclass(frozen=True, slots=True)
class ProportionStats:
    """Number of trials and number of successes of a binary metric."""

    n: int = 0
    successes: int = 0

    def __post_init__(self) -> None:
        # plain Python numbers (numpy / pandas scalars from SQL or frames are accepted)
        object.__setattr__(self, "n", _as_count(self.n, "n"))
        object.__setattr__(self, "successes", _as_count(self.successes, "successes"))
        if self.n < 0 or self.successes < 0 or self.successes > self.n:
            raise ValueError(
                f"ProportionStats needs 0 <= successes <= n, got n={self.n}, successes={self.successes}"
            )

    # -- constructors ---------------------------------------------------
    @classmethod
    def from_values(cls, values: Any) -> "ProportionStats":
        """From an array-like of booleans / 0-1 values (None/NaN ignored)."""
        arr = _clean(values)
        if arr.size and not np.all((arr == 0) | (arr == 1)):
            raise ValueError("ProportionStats.from_values expects 0/1 or boolean values")
        return cls(int(arr.size), int(arr.sum()))

    @classmethod
    def from_aggregates(cls, n: Any, successes: Any) -> "ProportionStats":
        """From SQL aggregates ``COUNT(*)`` and ``SUM(CASE WHEN ... THEN 1 ELSE 0 END)``.

        ``None`` (an empty SQL aggregate) counts as 0.
        """
        return cls(int(n or 0), int(successes or 0))

    # -- algebra ----------------------------------------------------------
    def __add__(self, other: "ProportionStats | None") -> "ProportionStats":
        if other is None:
            return self
        if not isinstance(other, ProportionStats):
            return NotImplemented
        return ProportionStats(self.n + other.n, self.successes + other.successes)

    def __radd__(self, other: Any) -> "ProportionStats":
        return self if _is_zero(other) else NotImplemented

    # -- moments ----------------------------------------------------------
    @property
    def mean(self) -> float:
        """Success rate; 0.0 when there is no trial."""
        return self.successes / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Per-trial Bernoulli variance ``p (1 - p)`` (the plug-in used by the z tests)."""
        p = self.mean
        return p * (1.0 - p)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "successes": self.successes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProportionStats":
        return cls(int(d.get("n", 0) or 0), int(d.get("successes", 0) or 0))


@dataclass(frozen=True, slots=True)
class MeanStats:
    """``n``, ``sum(x)`` and ``sum(x*x)`` of a continuous metric."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", _as_count(self.n, "n"))
        object.__setattr__(self, "total", float(self.total))
        object.__setattr__(self, "total_sq", float(self.total_sq))
        if self.n < 0:
            raise ValueError(f"{type(self).__name__} needs n >= 0, got {self.n}")
        if not (math.isfinite(self.total) and math.isfinite(self.total_sq)):
            raise ValueError(f"{type(self).__name__} needs finite sums, got {self.total}, {self.total_sq}")

    @classmethod
    def from_values(cls, values: Any) -> "MeanStats":
        """From an array-like of numbers; None/NaN/inf are ignored."""
        arr = _clean(values)
        return cls(int(arr.size), float(arr.sum()), float(np.dot(arr, arr)))

    @classmethod
    def from_aggregates(cls, n: Any, total: Any, total_sq: Any) -> "MeanStats":
        """From SQL ``COUNT(x), SUM(x), SUM(x * x)`` (``None`` = empty = 0)."""
        return cls(int(n or 0), float(total or 0.0), float(total_sq or 0.0))

    def __add__(self, other: "MeanStats | None") -> "MeanStats":
        if other is None:
            return self
        if not isinstance(other, MeanStats) or type(other) is not type(self):
            return NotImplemented
        return type(self)(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    def __radd__(self, other: Any) -> "MeanStats":
        return self if _is_zero(other) else NotImplemented

    @property
    def mean(self) -> float:
        """Arithmetic mean; 0.0 when empty."""
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1); 0.0 when ``n < 2``; clamped and de-noised (see module doc)."""
        return mean_var(self.n, self.total, self.total_sq)[1]

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total, "total_sq": self.total_sq}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MeanStats":
        return cls.from_aggregates(d.get("n"), d.get("total"), d.get("total_sq"))


@dataclass(frozen=True, slots=True)
class LogMeanStats(MeanStats):
    """:class:`MeanStats` of ``log(duration)``: latency on the log scale.

    ``exp(mean)`` is the geometric mean of the durations; the difference of two
    log-means is the log of the ratio of geometric means.  In SQL:
    ``COUNT(d), SUM(LN(d)), SUM(LN(d) * LN(d))`` over ``d > 0`` (SQLite needs
    its math functions, available in the Python builds of SQLite >= 3.35).
    """

    @classmethod
    def from_durations(cls, durations: Any) -> "LogMeanStats":
        """From raw durations; None/NaN/inf and non-positive values are ignored."""
        arr = _clean(durations)
        arr = arr[arr > 0]
        logs = np.log(arr)
        return cls(int(logs.size), float(logs.sum()), float(np.dot(logs, logs)))

    @property
    def geometric_mean(self) -> float:
        """Geometric mean of the durations (0.0 when empty)."""
        return math.exp(self.mean) if self.n else 0.0


#: ArmStats field -> statistic class.
ARM_STAT_TYPES: dict[str, type] = {
    "success": ProportionStats,
    "latency": LogMeanStats,
    "quality": MeanStats,
    "rating": MeanStats,
    "retries": MeanStats,
}

#: ArmStats field -> DataFrame column it is built from.
FRAME_COLUMNS: dict[str, str] = {
    "success": "status",
    "latency": "duration_ms",
    "quality": "quality_score",
    "rating": "user_rating",
    "retries": "retry_count",
}

# Statuses that are not outcomes yet: excluded from the success-rate denominator.
_PENDING_STATUSES = frozenset({"in_progress", "running", "pending"})


def _add_opt(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Statistics of one arm: executions plus one statistic per metric.

    ``executions`` counts every execution assigned to the arm (used for the
    sample-ratio-mismatch check and ``sample_size``).  Each metric may be
    ``None`` when the arm has no data for it.
    """

    executions: int = 0
    success: ProportionStats | None = None
    latency: LogMeanStats | None = None
    quality: MeanStats | None = None
    rating: MeanStats | None = None
    retries: MeanStats | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "executions", _as_count(self.executions, "executions"))
        if self.executions < 0:
            raise ValueError(f"executions must be >= 0, got {self.executions}")

    def __add__(self, other: "ArmStats | None") -> "ArmStats":
        if other is None:
            return self
        if not isinstance(other, ArmStats):
            return NotImplemented
        return ArmStats(
            executions=self.executions + other.executions,
            success=_add_opt(self.success, other.success),
            latency=_add_opt(self.latency, other.latency),
            quality=_add_opt(self.quality, other.quality),
            rating=_add_opt(self.rating, other.rating),
            retries=_add_opt(self.retries, other.retries),
        )

    def __radd__(self, other: Any) -> "ArmStats":
        return self if _is_zero(other) else NotImplemented

    def get(self, metric: str) -> Any:
        return getattr(self, metric)

    @property
    def n(self) -> int:
        """Executions of the arm (falls back on the success-rate trials when 0)."""
        if self.executions:
            return self.executions
        return self.success.n if self.success is not None else 0

    @classmethod
    def from_frame(cls, df: Any) -> "ArmStats":
        """Statistics of one arm from a DataFrame of executions: the sum of
        :func:`execution_aggregates` (see there for the columns read)."""
        parts = execution_aggregates(df)
        return cls.from_aggregates(parts.sum().to_dict())

    @classmethod
    def from_aggregates(cls, row: Mapping[str, Any]) -> "ArmStats":
        """From one row of SQL aggregates with these keys (all optional):

        ``executions``; ``success_n``, ``success_count``; ``latency_n``,
        ``latency_log_sum``, ``latency_log_sum_sq``; ``quality_n``,
        ``quality_sum``, ``quality_sum_sq``; ``rating_n``, ``rating_sum``,
        ``rating_sum_sq``; ``retries_n``, ``retries_sum``, ``retries_sum_sq``.
        A metric whose ``*_n`` key is absent is ``None``.
        """
        def g(k: str) -> Any:
            return row.get(k)

        return cls(
            executions=int(g("executions") or 0),
            success=ProportionStats.from_aggregates(g("success_n"), g("success_count"))
            if "success_n" in row else None,
            latency=LogMeanStats.from_aggregates(g("latency_n"), g("latency_log_sum"), g("latency_log_sum_sq"))
            if "latency_n" in row else None,
            quality=MeanStats.from_aggregates(g("quality_n"), g("quality_sum"), g("quality_sum_sq"))
            if "quality_n" in row else None,
            rating=MeanStats.from_aggregates(g("rating_n"), g("rating_sum"), g("rating_sum_sq"))
            if "rating_n" in row else None,
            retries=MeanStats.from_aggregates(g("retries_n"), g("retries_sum"), g("retries_sum_sq"))
            if "retries_n" in row else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for storing daily statistics); inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {"executions": self.executions}
        for name in ARM_STAT_TYPES:
            s = getattr(self, name)
            out[name] = None if s is None else s.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArmStats":
        kwargs: dict[str, Any] = {"executions": int(d.get("executions", 0) or 0)}
        for name, klass in ARM_STAT_TYPES.items():
            v = d.get(name)
            kwargs[name] = None if v is None else klass.from_dict(v)
        return cls(**kwargs)

    @classmethod
    def sum(cls, parts: Iterable["ArmStats"]) -> "ArmStats":
        """Sum of many statistics (e.g. daily ones), the empty sum being empty."""
        acc = cls()
        for p in parts:
            acc = acc + p
        return acc


def execution_aggregates(df: Any) -> Any:
    """Each execution's share of its arm's statistics: one row per execution, the columns of
    :meth:`ArmStats.from_aggregates`. Summed over an arm (``ArmStats.from_frame``) or per group
    (``analyze/daily.daily_stats``), the one place where rows become statistics.

    Columns read (each optional; a missing one leaves its metric out): ``status`` (success iff
    ``"success"``; a missing status and ``in_progress`` rows are not outcomes and are left out of
    the success rate), ``duration_ms`` (non-positive values ignored, compared on the log scale),
    ``quality_score``, ``user_rating``, ``retry_count``. NaN/None/inf are ignored per metric.
    """
    import pandas as pd  # local: keeps the module importable without pandas at import time

    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    parts: dict[str, Any] = {"executions": pd.Series(1, index=df.index, dtype="int64")}
    if "status" in df.columns:
        status = df["status"].astype("string").str.lower()
        outcome = status.notna() & ~status.isin(_PENDING_STATUSES)
        parts["success_n"] = outcome.astype("int64")
        parts["success_count"] = (outcome & status.eq("success").fillna(False).astype(bool)).astype("int64")
    for metric, column in FRAME_COLUMNS.items():
        if metric == "success" or column not in df.columns:
            continue
        values = pd.to_numeric(df[column], errors="coerce").astype(float)
        if metric == "latency":
            values = np.log(values.where(values > 0))
        present = np.isfinite(values)
        kept = values.where(present, 0.0)
        total, total_sq = ("log_sum", "log_sum_sq") if metric == "latency" else ("sum", "sum_sq")
        parts[f"{metric}_n"] = present.astype("int64")
        parts[f"{metric}_{total}"] = kept
        parts[f"{metric}_{total_sq}"] = kept * kept
    return pd.DataFrame(parts, index=df.index)
