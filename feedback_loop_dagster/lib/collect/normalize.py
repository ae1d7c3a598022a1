"""Normalise raw source rows into the shape FeedbackSchema validates.

Values that cannot even be parsed (text in a number column, a malformed timestamp or JSON) and
non-finite numbers (NaN, +-inf) are recorded as errors per row instead of silently becoming
nulls, so their rows are quarantined with a reason that names the column. The quality JSON rule
is DESIGN.md section 2's.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pandas as pd

# Vocabulary of tracing libraries we have seen, mapped onto ours (DESIGN.md section 2).
STATUS_SYNONYMS = {
    "ok": "success",
    "succeeded": "success",
    "successful": "success",
    "completed": "success",
    "passed": "success",
    "fail": "failure",
    "failed": "failure",
    "err": "error",
    "exception": "error",
    "timed_out": "timeout",
    "timedout": "timeout",
    "time_out": "timeout",
    "canceled": "cancelled",
    "aborted": "cancelled",
    "running": "in_progress",
    "pending": "in_progress",
    "started": "in_progress",
    "in-progress": "in_progress",
}
STAR_SCALE_MAX = 5.0
TEXT_COLUMNS = ("execution_id", "pattern_id", "pattern_version", "error_type", "error_message", "unit_id")


def normalize_executions(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Returns the normalised frame and, per row, the first parse error (or None)."""
    messages = np.full(len(raw), None, dtype=object)
    noted = np.zeros(len(raw), dtype=bool)

    def note(mask: pd.Series | np.ndarray, message: str) -> None:
        new = np.asarray(mask, dtype=bool) & ~noted
        messages[new] = message
        noted[new] = True

    out = pd.DataFrame(index=raw.index)
    out["seq"] = pd.to_numeric(raw["seq"]).astype("int64")
    for column in TEXT_COLUMNS:
        out[column] = _text(raw[column]) if column in raw else pd.Series(None, index=raw.index, dtype=object)

    out["started_at"] = _timestamp(raw["started_at"], "started_at", note)
    out["completed_at"] = _timestamp(raw.get("completed_at"), "completed_at", note, index=raw.index)

    duration = _number(raw.get("duration_ms"), "duration_ms", note, index=raw.index)
    derived = (out["completed_at"] - out["started_at"]).dt.total_seconds() * 1000.0
    out["duration_ms"] = duration.where(duration.notna(), derived)

    out["status"] = _status(_text(raw["status"]))
    note(out["status"].isna(), "status: missing")

    quality = _number(raw.get("quality_score"), "quality_score", note, index=raw.index)
    if "quality_results" in raw:
        from_json = _quality_from_json(raw["quality_results"].where(quality.isna()), note)
        quality = quality.where(quality.notna(), from_json)
    out["quality_score"] = quality
    out["performance_score"] = _number(raw.get("performance_score"), "performance_score", note, index=raw.index)
    out["user_rating"] = _rating(_number(raw.get("user_rating"), "user_rating", note, index=raw.index))

    retries = _number(raw.get("retry_count"), "retry_count", note, index=raw.index).fillna(0)
    whole = retries == np.floor(retries)
    note(~whole, "retry_count: not a whole number")
    # beyond int64 is as implausible as any count above the schema's cap
    fits = whole & (retries.abs() < 2.0**62)
    out["retry_count"] = retries.where(fits, np.where(whole, 2**62, 0)).astype("int64")
    return out, pd.Series(messages, index=raw.index, dtype=object)


def _status(status: pd.Series) -> pd.Series:
    """Stripped, lower-cased, synonyms mapped; missing stays missing (NaN).

    Statuses repeat a handful of values, so each distinct value is cleaned once.
    """
    codes, uniques = pd.factorize(status, use_na_sentinel=True)
    cleaned = pd.Series(uniques, dtype=object).str.strip().str.lower()
    synonym = cleaned.map(STATUS_SYNONYMS)
    cleaned = synonym.where(synonym.notna(), cleaned).to_numpy(dtype=object)
    values = np.full(len(status), np.nan, dtype=object)
    present = codes >= 0
    values[present] = cleaned[codes[present]]
    return pd.Series(values, index=status.index, dtype=object)


def _text(values: pd.Series) -> pd.Series:
    values = values.astype(object).where(values.notna(), None)
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return values
    return values.map(lambda v: v if v is None or isinstance(v, str) else str(v))


def _number(values: pd.Series | None, column: str, note, index) -> pd.Series:
    if values is None:
        return pd.Series(np.nan, index=index, dtype="float64")
    parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    note(values.notna() & parsed.isna(), f"{column}: not a number")
    finite = np.isfinite(parsed.to_numpy())
    note(parsed.notna().to_numpy() & ~finite, f"{column}: not finite")
    return parsed.where(finite | parsed.isna(), np.nan)


def _timestamp(values: pd.Series | None, column: str, note, index=None) -> pd.Series:
    if values is None:
        return pd.Series(pd.NaT, index=index, dtype="datetime64[ns, UTC]")
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601").astype("datetime64[ns, UTC]")
    note(values.notna() & parsed.isna(), f"{column}: not a timestamp")
    return parsed


def _rating(values: pd.Series) -> pd.Series:
    """Ratings in [0, 1] stay; (1, 5] is read as a 1-5 star rating; anything else fails validation."""
    stars = (values > 1) & (values <= STAR_SCALE_MAX)
    return values.where(~stars, (values - 1.0) / (STAR_SCALE_MAX - 1.0))


# What PostgreSQL's float8 input accepts of a JSON string score, as the original system's
# `(quality_results->>'score')::float` does: a decimal number, optionally signed, with exponent,
# surrounded by blanks; NaN and Infinity spelled out are numbers too (and then not finite).
_NUMERIC_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_NON_FINITE_TEXT = re.compile(r"\s*([+-]?(inf|infinity)|nan)\s*", re.IGNORECASE)

QUALITY_JSON_ERRORS = {
    "json": "quality_results: not valid JSON",
    "object": "quality_results: not a JSON object",
    "duplicate": "quality_results: duplicate score key",
    "number": "quality_results: score is not a number",
    "finite": "quality_results: score is not finite",
}


def quality_score_of(document) -> float | str | None:
    """The quality score a Track-2 document holds (DESIGN.md section 2): a float, None (no score:
    SQL NULL, JSON null, no `score` key, `score: null`), or the key of QUALITY_JSON_ERRORS that
    quarantines the row. `document` is JSON text, or what a json/jsonb column was loaded as."""
    if isinstance(document, str):
        try:
            document = json.loads(document, parse_constant=_reject_constant, object_pairs_hook=_JsonObject.of)
        except ValueError:  # JSONDecodeError, and NaN / Infinity literals (not JSON)
            return "json"
        except RecursionError:
            return "json"
    if document is None:
        return None
    if not isinstance(document, dict):
        return "object"
    if "score" in getattr(document, "duplicated", ()):
        return "duplicate"
    score = document.get("score")
    if score is None:
        return None
    if isinstance(score, str):
        if _NON_FINITE_TEXT.fullmatch(score):
            return "finite"
        if not _NUMERIC_TEXT.fullmatch(score):
            return "number"
        score = float(score)
    elif isinstance(score, bool) or not isinstance(score, int | float):
        return "number"
    score = float(score) if not isinstance(score, int) or abs(score) < 2**1023 else float("inf")
    return score if np.isfinite(score) else "finite"


class _JsonObject(dict):
    """A JSON object that remembers which of its keys were repeated (json.loads keeps the last)."""

    duplicated: frozenset = frozenset()

    @classmethod
    def of(cls, pairs: list) -> _JsonObject:
        obj = cls(pairs)
        if len(obj) < len(pairs):
            obj.duplicated = frozenset(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        return obj


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _quality_from_json(values: pd.Series, note) -> pd.Series:
    present = values.notna().to_numpy()
    scores = np.full(len(values), np.nan)
    errors = np.full(len(values), None, dtype=object)
    if present.any():
        texts = values.to_numpy(dtype=object)[present]
        if pd.api.types.infer_dtype(texts, skipna=False) == "string":
            # Documents repeat (a score and little else): each distinct one is parsed once.
            codes, documents = pd.factorize(texts)
        else:  # parsed values from a JSON column (dicts, lists, numbers): one by one
            codes, documents = np.arange(len(texts)), texts
        parsed = [quality_score_of(d) for d in documents]
        unique_scores = np.array([p if isinstance(p, float) else np.nan for p in parsed])
        unique_errors = np.array([p if isinstance(p, str) else None for p in parsed], dtype=object)
        scores[present] = unique_scores[codes]
        errors[present] = unique_errors[codes]
    for key, message in QUALITY_JSON_ERRORS.items():
        note(errors == key, message)
    return pd.Series(scores, index=values.index, dtype="float64")
