"""Split normalised rows into valid feedback and quarantined rows, one reason per row."""

from __future__ import annotations

import re

import pandas as pd
import pandera.errors as pa_errors

from feedback_loop_dagster.lib.collect.schema import FeedbackSchema

_READABLE_CHECKS = (
    (re.compile(r"not_nullable"), "missing"),
    (re.compile(r"isin\(.*\)"), "not an allowed value"),
    (re.compile(r"greater_than_or_equal_to\((.*)\)"), r"must be >= \1"),
    (re.compile(r"less_than_or_equal_to\((.*)\)"), r"must be <= \1"),
    (re.compile(r"in_range\((.*), (.*)\)"), r"must be in [\1, \2]"),
    (re.compile(r"str_length\(.*\)"), "empty"),
)


def readable_check(check: str) -> str:
    for pattern, replacement in _READABLE_CHECKS:
        if pattern.fullmatch(check):
            return pattern.sub(replacement, check)
    return check


def validate_feedback(normalized: pd.DataFrame, row_errors: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns (valid rows, quarantined rows with `reason` and `details`).

    `row_errors` holds a reason found before schema validation (a parse error, a duplicate) or
    None. A row's reason is its first problem; `details` lists all of them.
    """
    problems: dict[object, list[str]] = {i: [e] for i, e in row_errors.dropna().items()}
    try:
        FeedbackSchema.validate(normalized, lazy=True)
    except pa_errors.SchemaErrors as exc:
        cases = exc.failure_cases
        if cases["index"].isna().any():
            # A schema-wide failure (a wrong dtype) is a bug in normalisation, not bad data.
            raise
        for row in cases.itertuples(index=False):
            column = row.column if row.schema_context == "Column" else None
            check = readable_check(str(row.check))
            message = f"{column}: {check}" if column else check
            if column and row.failure_case is not None and check != "missing":
                message += f" (got {row.failure_case!r})"
            found = problems.setdefault(row.index, [])
            if message not in found:  # a wide check reports each row once per column
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
