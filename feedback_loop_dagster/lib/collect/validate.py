"""Split normalised rows into valid feedback and quarantined rows, one reason per row."""

from __future__ import annotations

import functools
import re

import pandas as pd
import pandera.errors as pa_errors

from feedback_loop_dagster.lib.collect.schema import FeedbackSchema, feedback_schema
from feedback_loop_dagster.lib.settings import DEFAULT_MAX_DURATION_MS

_SCHEMA_COLUMNS = frozenset(FeedbackSchema.to_schema().columns)

_READABLE_CHECKS = (
    (re.compile(r"not_nullable"), "missing"),
    (re.compile(r"isin\(.*\)"), "not an allowed value"),
    (re.compile(r"greater_than_or_equal_to\((.*)\)"), r"must be >= \1"),
    (re.compile(r"less_than_or_equal_to\((.*)\)"), r"must be <= \1"),
    (re.compile(r"in_range\((.*), (.*)\)"), r"must be in [\1, \2]"),
    (re.compile(r"str_length\(.*\)"), "empty"),
    (re.compile(r"str_matches\(.*\)"), "not a valid version name"),
)


@functools.lru_cache(maxsize=1024)
def readable_check(check: str) -> str:
    for pattern, replacement in _READABLE_CHECKS:
        if pattern.fullmatch(check):
            return pattern.sub(replacement, check)
    return check


_schema = functools.lru_cache(maxsize=8)(feedback_schema)


def validate_feedback(
    normalized: pd.DataFrame, row_errors: pd.Series, max_duration_ms: float = DEFAULT_MAX_DURATION_MS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns (valid rows, quarantined rows with `reason` and `details`).

    `row_errors` holds a reason found before schema validation (a parse error, a duplicate) or
    None. A row's reason is its first problem; `details` lists all of them.
    """
    problems: dict[object, list[str]] = {i: [e] for i, e in row_errors.dropna().items()}
    # Only the schema's columns: FeedbackSchema is not strict, so other columns are never checked,
    # and pandera then does not spell out their values for every row failing a wide check.
    schema_columns = [c for c in normalized.columns if c in _SCHEMA_COLUMNS]
    try:
        _schema(float(max_duration_ms)).validate(normalized[schema_columns], lazy=True)
    except pa_errors.SchemaErrors as exc:
        cases = exc.failure_cases
        if cases["index"].isna().any():
            # A schema-wide failure (a wrong dtype) is a bug in normalisation, not bad data.
            raise
        # A wide check reports each failing row once per column, with the same message: keep the
        # first report of each (row, message), in pandera's order, which decides the reason.
        column = cases["column"].where(cases["schema_context"] == "Column", None)
        checks = cases["check"].astype(str)
        firsts = ~pd.DataFrame({"i": cases["index"], "c": column, "k": checks}).duplicated().to_numpy()
        for index, column_name, check, failure_case in zip(
            cases["index"].to_numpy()[firsts],
            column.to_numpy()[firsts],
            checks.to_numpy()[firsts],
            cases["failure_case"].to_numpy()[firsts],
            strict=True,
        ):
            check = readable_check(check)
            message = f"{column_name}: {check}" if column_name else check
            if column_name and failure_case is not None and check != "missing":
                message += f" (got {failure_case!r})"
            found = problems.setdefault(index, [])
            if message not in found:
                found.append(message)
    if not problems:
        return normalized, normalized.iloc[0:0].assign(reason=pd.Series(dtype=object), details=pd.Series(dtype=object))
    bad = normalized.index.isin(list(problems))
    quarantined = normalized[bad].copy()
    quarantined["details"] = [("; ".join(problems[i])) for i in quarantined.index]
    quarantined["reason"] = [_category(problems[i][0]) for i in quarantined.index]
    return normalized[~bad], quarantined


def _category(message: str) -> str:
    """The reason without the offending value, so reasons can be counted."""
    return message.split(" (got ", 1)[0]
