"""Normalise raw source rows into the shape FeedbackSchema validates.

Values that cannot even be parsed (text in a number column, a malformed timestamp or JSON) are
recorded as parse errors per row instead of silently becoming nulls, so their rows are
quarantined with a reason that names the column.
"""

from __future__ import annotations

import json

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
    note(retries != np.floor(retries), "retry_count: not a whole number")
    out["retry_count"] = retries.where(retries == np.floor(retries), 0).astype("int64")
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
    return parsed


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


def _quality_from_json(values: pd.Series, note) -> pd.Series:
    present = values.notna().to_numpy()
    scores = np.full(len(values), np.nan)
    bad_json = np.zeros(len(values), dtype=bool)
    bad_score = np.zeros(len(values), dtype=bool)
    if present.any():
        texts = values.to_numpy(dtype=object)[present]
        if pd.api.types.infer_dtype(texts, skipna=False) == "string":
            # Documents repeat (a score and little else): each distinct one is parsed once.
            codes, documents = pd.factorize(texts)
        else:  # parsed values from a JSON column (dicts, lists, numbers): one by one
            codes, documents = np.arange(len(texts)), texts
        unique_scores = np.full(len(documents), np.nan)
        unique_bad_json = np.zeros(len(documents), dtype=bool)
        unique_bad_score = np.zeros(len(documents), dtype=bool)
        for i, text in enumerate(documents):
            try:
                document = json.loads(text) if isinstance(text, str) else text
            except (TypeError, ValueError):
                unique_bad_json[i] = True
                continue
            score = document.get("score") if isinstance(document, dict) else None
            if score is None:
                continue
            if isinstance(score, bool) or not isinstance(score, int | float):
                unique_bad_score[i] = True
                continue
            unique_scores[i] = float(score)
        scores[present] = unique_scores[codes]
        bad_json[present] = unique_bad_json[codes]
        bad_score[present] = unique_bad_score[codes]
    note(bad_json, "quality_results: not valid JSON")
    note(bad_score, "quality_results: score is not a number")
    return pd.Series(scores, index=values.index, dtype="float64")
