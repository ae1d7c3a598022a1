"""The collector's rules, written once, as SQL: parse, normalise, validate, give a reason.

Collection runs inside the warehouse database (DESIGN.md section 2, collector.py), so no row
travels through Python. The rules are SQLAlchemy expressions: one definition compiles for
PostgreSQL and for SQLite (`Dialect` holds the few spellings that differ). They come in two parts:

* parse rules (`parsed_values`, then `contract_values`): each source column becomes the
  contract's value (numbers, UTC timestamps, the status vocabulary, star ratings, the Track-2
  quality JSON), with a rule per way it can fail to (not a number, not finite, not a
  timestamp, not valid JSON...);
* schema rules (`schema_rules`): generated from the pandera model `FeedbackSchema` -- every
  column check (bounds, allowed values, string rules, nullability) becomes a SQL predicate, and
  every dataframe check has a SQL twin here, by name. A model check without a twin is an error
  at import, and a test holds the SQL and pandera to the same verdicts on the same rows.

A row's reason is its first broken rule (`reason_of`); its details list all of them (`details_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandera.pandas as pa
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from feedback_loop_dagster.lib.collect.schema import EXECUTION_STATUSES, FeedbackSchema, feedback_schema
from feedback_loop_dagster.lib.registry.versions import VERSION_NAME_PATTERN

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
BLANKS = " \t\n\r\f\v"

# A number written as text: what PostgreSQL's float8 input reads as a decimal (sign, digits,
# point, exponent, blanks around). NaN / Infinity spelled out are numbers too, and not finite.
NUMERIC_TEXT = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"
NON_FINITE_TEXT = r"^\s*([+-]?([iI][nN][fF]|[iI][nN][fF][iI][nN][iI][tT][yY])|[nN][aA][nN])\s*$"
# A decimal PostgreSQL converts to float8 without a range error (|x| well inside 1e-300..1e300);
# anything else goes through the exception-safe pg_temp.fl_float8.
_SAFE_DECIMAL = r"^\s*[+-]?[0-9]{1,150}(\.[0-9]{0,150})?([eE][+-]?[0-9]{1,2})?\s*$"
# A flat JSON object (string keys, scalar values, no \u0000): PostgreSQL casts it to jsonb
# without an error; any other document goes through the exception-safe pg_temp.fl_jsonb.
_JSON_STRING = r'"([^"\\\x01-\x1f]|\\(["\\/bfnrt]|u(?!0000)[0-9a-fA-F]{4}))*"'
_JSON_SCALAR = rf"({_JSON_STRING}|-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?|true|false|null)"
_JSON_MEMBER = rf"\s*{_JSON_STRING}\s*:\s*{_JSON_SCALAR}\s*"
_FLAT_JSON_OBJECT = rf"^\s*\{{({_JSON_MEMBER}(,{_JSON_MEMBER})*|\s*)\}}\s*$"

# PostgreSQL has no non-throwing cast before version 16 (pg_input_is_valid): these session-local
# functions turn a failed cast into NULL. They serve loosely typed sources (a view with text
# columns) and the rare JSON document the fast patterns above do not vouch for.
PG_SAFE_CASTS = (
    """CREATE OR REPLACE FUNCTION pg_temp.fl_float8(t text) RETURNS float8 LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN RETURN t::float8;
    EXCEPTION WHEN numeric_value_out_of_range THEN
      RETURN CASE WHEN t ~ '[eE]\\s*-|[eE]-' THEN 0.0 ELSE 'Infinity'::float8 END;
    WHEN others THEN RETURN NULL; END $$""",
    """CREATE OR REPLACE FUNCTION pg_temp.fl_timestamptz(t text) RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
    BEGIN RETURN t::timestamptz; EXCEPTION WHEN others THEN RETURN NULL; END $$""",
    """CREATE OR REPLACE FUNCTION pg_temp.fl_jsonb(t text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN RETURN t::jsonb; EXCEPTION WHEN others THEN RETURN NULL; END $$""",
)

# SQLAlchemy's SQLite form of a timestamp, as a GLOB (native, unlike REGEXP, a Python call per row)
_SQLITE_CANONICAL_STAMP = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]"
# A name of letters, digits, '.', '_' and '-' only matches any str_matches rule that only forbids
# blanks and control characters: SQLite checks that natively before calling REGEXP.
_SQLITE_PLAIN_NAME = "*[^A-Za-z0-9._-]*"

NUMBER, TIMESTAMP, TEXT, JSON = "number", "timestamp", "text", "json"
# completed_at - started_at in milliseconds: a value the rules use, not a column of `feedback`
COMPLETED_SPAN = "completed_span_ms"
# the parsed quality_results document, a column of the rows parsed_values reads
QUALITY_DOCUMENT = "quality_document"

NUMBER_COLUMNS = ("duration_ms", "quality_score", "performance_score", "user_rating", "retry_count")
TEXT_COLUMNS = ("execution_id", "pattern_id", "pattern_version", "error_type", "error_message", "unit_id")
TIMESTAMP_COLUMNS = ("started_at", "completed_at")
READ_JSON = "read_quality_json"  # quality_score is NULL and quality_results is not: the JSON decides
JSON_SCORE = "json_score"


@dataclass(frozen=True)
class Rule:
    reason: str
    broken: sa.ColumnElement  # true when the row breaks the rule (NULL: not broken)


class Dialect:
    """The few expressions PostgreSQL and SQLite spell differently."""

    def __init__(self, name: str) -> None:
        self.pg = name == "postgresql"

    def true(self) -> sa.ColumnElement:
        return sa.true() if self.pg else sa.literal_column("1")

    def false(self) -> sa.ColumnElement:
        return sa.false() if self.pg else sa.literal_column("0")

    def is_set(self, flag: sa.ColumnElement) -> sa.ColumnElement:
        """A flag column computed in an inner query, read as a condition."""
        return flag == self.true()

    def matches(self, text: sa.ColumnElement, pattern: str) -> sa.ColumnElement:
        """`text` matches `pattern` (false for NULL). SQLite's REGEXP is Python's re.search, which
        only takes text."""
        if self.pg:
            return sa.func.coalesce(text.regexp_match(pattern), sa.false())
        return sa.func.coalesce(sa.cast(text, sa.Text).regexp_match(pattern), 0) == 1

    def concat(self, *parts: sa.ColumnElement) -> sa.ColumnElement:
        joined = parts[0]
        for part in parts[1:]:
            joined = joined.op("||")(part)
        return joined

    def text(self, value: sa.ColumnElement) -> sa.ColumnElement:
        return sa.cast(value, sa.Text) if self.pg else value

    def trim_lower(self, value: sa.ColumnElement) -> sa.ColumnElement:
        return sa.func.lower(sa.func.btrim(value, BLANKS) if self.pg else sa.func.trim(value, BLANKS))

    def number(self, value: sa.ColumnElement, kind: str) -> sa.ColumnElement:
        """A source value as a double; NULL when it is not a number (beyond a double: +-inf)."""
        if self.pg:
            return sa.cast(value, sa.Float) if kind == NUMBER else self.text_number(sa.cast(value, sa.Text))
        # SQLite: a REAL column keeps text it cannot convert; integers and reals are numbers.
        kind_of = sa.func.typeof(value)
        return sa.case(
            (kind_of.in_(["real", "integer"]), sa.cast(value, sa.Float)),
            (kind_of == "text", self.text_number(value)),
        )

    def text_number(self, text: sa.ColumnElement) -> sa.ColumnElement:
        """A double from text matching NUMERIC_TEXT or NON_FINITE_TEXT (NULL otherwise); beyond a
        double: +-inf. NaN spelled out is NaN on PostgreSQL and NULL on SQLite, which has none."""
        if self.pg:
            return sa.case(
                (text.regexp_match(_SAFE_DECIMAL), sa.cast(text, sa.Float)),
                (text.regexp_match(NUMERIC_TEXT), sa.func.pg_temp.fl_float8(text)),
                (text.regexp_match(NON_FINITE_TEXT), sa.cast(text, sa.Float)),
            )
        return sa.case(
            (self.matches(text, NUMERIC_TEXT), sa.cast(text, sa.Float)),
            (
                self.matches(text, NON_FINITE_TEXT) & ~self.matches(text, "(?i)nan"),
                sa.case((self.matches(text, "-"), sa.literal_column("-9e999")), else_=sa.literal_column("9e999")),
            ),
        )

    def non_finite(self, number: sa.ColumnElement) -> sa.ColumnElement:
        # SQLite cannot store NaN (it becomes NULL); +-inf are 9e999 / -9e999.
        if self.pg:
            return number.in_([sa.literal_column(f"'{v}'::float8") for v in ("NaN", "Infinity", "-Infinity")])
        return number.in_([sa.literal_column("9e999"), sa.literal_column("-9e999")])

    def without_nan(self, number: sa.ColumnElement) -> sa.ColumnElement:
        """NaN as NULL, as SQLite holds it (PostgreSQL's NaN is above every number, so it would
        also break the upper bounds); the `not finite` rule has already seen it."""
        return sa.func.nullif(number, sa.literal_column("'NaN'::float8")) if self.pg else number

    def timestamp(self, value: sa.ColumnElement, kind: str) -> sa.ColumnElement:
        """The instant, NULL when it is not one. PostgreSQL: timestamptz (the session runs in UTC,
        so a naive value is UTC). SQLite: the text SQLAlchemy stores, 'YYYY-MM-DD HH:MM:SS.ffffff'
        in UTC; another ISO 8601 form is read by SQLite's date functions (to the millisecond)."""
        if self.pg:
            if kind == TIMESTAMP:
                return sa.cast(value, sa.DateTime(timezone=True))
            return sa.func.pg_temp.fl_timestamptz(sa.cast(value, sa.Text))
        readable = (sa.func.typeof(value) == "text") & sa.func.julianday(value).is_not(None)
        canonical = value.op("GLOB", is_comparison=True)(_SQLITE_CANONICAL_STAMP)
        return sa.case(
            (readable & canonical, value),
            (readable, self.concat(sa.func.strftime("%Y-%m-%d %H:%M:", value), sa.func.strftime("%f", value), sa.literal("000"))),
        )

    def milliseconds_between(self, end: sa.ColumnElement, start: sa.ColumnElement) -> sa.ColumnElement:
        """end - start in milliseconds, of two parsed instants: whole microseconds / 1000, so both
        databases give the same double."""
        if self.pg:
            micros = sa.func.round(sa.func.date_part("epoch", end - start) * 1_000_000.0)
            return micros / 1000.0

        def time_of_day(stamp):  # in microseconds, from the text (julianday is coarser)
            return (
                sa.cast(sa.func.substr(stamp, 12, 2), sa.Integer) * 3_600_000_000
                + sa.cast(sa.func.substr(stamp, 15, 2), sa.Integer) * 60_000_000
                + sa.cast(sa.func.substr(stamp, 18), sa.Float) * 1_000_000.0
            )

        days = sa.func.julianday(sa.func.substr(end, 1, 10)) - sa.func.julianday(sa.func.substr(start, 1, 10))
        return sa.func.round(days * 86_400_000_000.0 + (time_of_day(end) - time_of_day(start))) / 1000.0

    def quality_document(self, document: sa.ColumnElement, kind: str) -> sa.ColumnElement:
        """The parsed Track-2 document, NULL when it is not JSON."""
        if not self.pg:
            return sa.case((sa.func.json_valid(document) == 1, document))
        if kind == JSON:
            return sa.cast(document, JSONB)
        text = sa.cast(document, sa.Text)
        return sa.case((text.regexp_match(_FLAT_JSON_OBJECT), sa.cast(text, JSONB)), else_=sa.func.pg_temp.fl_jsonb(text))

    def quality_json(self, parsed: sa.ColumnElement, document: sa.ColumnElement) -> tuple[sa.ColumnElement, dict[str, sa.ColumnElement]]:
        """(the score as a double, {QUALITY_JSON_ERRORS key: flag}) of a read Track-2 document;
        `parsed` is quality_document's value, `document` the source column."""
        if self.pg:
            text = sa.cast(document, sa.Text)
            doc_type = sa.func.jsonb_typeof(parsed)
            score_type = sa.func.jsonb_typeof(parsed.op("->")("score"))
            score_text = parsed.op("->>", return_type=sa.Text)("score")
            # jsonb keeps only the last of repeated keys: count them in the text, as json
            key = sa.func.json_object_keys(sa.cast(text, sa.JSON)).column_valued("score_key")
            repeated = sa.select(sa.func.count()).where(key == "score").scalar_subquery() > 1
            is_number, is_string = score_type == "number", score_type == "string"
            number = sa.case((is_number | is_string, self.text_number(score_text)))
        else:
            text = document
            doc_type = sa.func.json_type(parsed)
            score_type = sa.func.json_type(parsed, "$.score")
            score_text = sa.func.json_extract(parsed, "$.score")
            keys = sa.func.json_each(parsed).table_valued("key").alias("score_keys")
            repeated = sa.select(sa.func.count()).select_from(keys).where(keys.c.key == "score").scalar_subquery() > 1
            is_number, is_string = score_type.in_(["integer", "real"]), score_type == "text"
            number = sa.case((is_number, sa.cast(score_text, sa.Float)), (is_string, self.text_number(score_text)))
        is_object = doc_type == "object"
        # the keys are only counted where the text names "score" twice (and, as PostgreSQL
        # evaluates AND in any order, only of an object)
        duplicate = sa.case((is_object & text.like('%"score"%"score"%'), repeated), else_=self.false())
        words = sa.case((is_string, self.matches(score_text, NON_FINITE_TEXT)), else_=self.false())
        flags = {
            "json": parsed.is_(None),
            "object": parsed.is_not(None) & ~is_object & (doc_type != "null"),
            "duplicate": duplicate,
            "number": is_object & score_type.not_in(["null"]) & number.is_(None) & ~words,
            "finite": is_object & (words | self.non_finite(number)),
        }
        return number, flags


QUALITY_JSON_ERRORS = {
    "json": "quality_results: not valid JSON",
    "object": "quality_results: not a JSON object",
    "duplicate": "quality_results: duplicate score key",
    "number": "quality_results: score is not a number",
    "finite": "quality_results: score is not finite",
}


def parsed_values(source: Mapping[str, sa.ColumnElement], kinds: Mapping[str, str], dialect: Dialect) -> dict[str, sa.ColumnElement]:
    """Each source column read as the contract's type, NULL where it cannot be (first stage).

    `source`: the source's columns (a missing optional column is a NULL literal) and
    QUALITY_DOCUMENT (`Dialect.quality_document`); `kinds`: how each column is typed in the
    source (NUMBER, TIMESTAMP, TEXT, JSON), which decides how it is read. Besides the values:
    per number column `<name>_unread` ('number' / 'finite' when a present value is not a
    number / is NaN or Infinity spelled out), per timestamp `<name>_unread` (a flag), the JSON
    score and its flags (`json_<key>`).
    """
    values: dict[str, sa.ColumnElement] = {"seq": source["seq"]}
    for name in TEXT_COLUMNS:
        values[name] = dialect.text(source[name])
    for name in TIMESTAMP_COLUMNS:
        stamp = dialect.timestamp(source[name], kinds[name])
        values[name] = stamp
        values[f"{name}_unread"] = source[name].is_not(None) & stamp.is_(None)
    # most statuses are already one of ours: they skip the cleaning and the synonyms
    status = dialect.text(source["status"])
    cleaned = dialect.trim_lower(status)
    values["status"] = sa.case(
        (status.in_(EXECUTION_STATUSES), status), else_=sa.case(STATUS_SYNONYMS, value=cleaned, else_=cleaned)
    )
    for name in NUMBER_COLUMNS:
        number = dialect.number(source[name], kinds[name])
        values[name] = number
        if dialect.pg and kinds[name] == NUMBER:
            values[f"{name}_unread"] = sa.null()
            continue
        words = dialect.matches(sa.cast(source[name], sa.Text) if dialect.pg else source[name], NON_FINITE_TEXT)
        values[f"{name}_unread"] = sa.case(
            (source[name].is_not(None) & number.is_(None), sa.case((words, "finite"), else_="number"))
        )
    read_json = source["quality_score"].is_(None) & source["quality_results"].is_not(None)
    values[READ_JSON] = read_json
    score, flags = dialect.quality_json(source[QUALITY_DOCUMENT], source["quality_results"])
    values[JSON_SCORE] = score
    for key, flag in flags.items():
        values[f"json_{key}"] = read_json & flag
    return values


def contract_values(parsed: Mapping[str, sa.ColumnElement], dialect: Dialect) -> tuple[dict[str, sa.ColumnElement], list[Rule]]:
    """The contract's values (what FeedbackSchema validates) and the parse rules, in column
    order (second stage; `parsed` are parsed_values' columns)."""
    rules: list[Rule] = []
    for name in TIMESTAMP_COLUMNS:
        rules.append(Rule(f"{name}: not a timestamp", dialect.is_set(parsed[f"{name}_unread"])))

    def number(name: str) -> sa.ColumnElement:
        unread = parsed[f"{name}_unread"]
        rules.append(Rule(f"{name}: not a number", unread == "number"))
        rules.append(Rule(f"{name}: not finite", (unread == "finite") | dialect.non_finite(parsed[name])))
        return dialect.without_nan(parsed[name])

    values = {name: parsed[name] for name in ("seq", *TEXT_COLUMNS, *TIMESTAMP_COLUMNS)}
    values[COMPLETED_SPAN] = dialect.milliseconds_between(parsed["completed_at"], parsed["started_at"])
    values["duration_ms"] = sa.func.coalesce(number("duration_ms"), values[COMPLETED_SPAN])
    values["status"] = parsed["status"]
    quality = number("quality_score")
    rules.extend(Rule(message, dialect.is_set(parsed[f"json_{key}"])) for key, message in QUALITY_JSON_ERRORS.items())
    values["quality_score"] = sa.case((dialect.is_set(parsed[READ_JSON]), dialect.without_nan(parsed[JSON_SCORE])), else_=quality)
    values["performance_score"] = number("performance_score")
    rating = number("user_rating")
    # (1, 5] is a 1-5 star rating; anything else outside [0, 1] fails validation
    values["user_rating"] = sa.case(
        ((rating > 1) & (rating <= STAR_SCALE_MAX), (rating - 1.0) / (STAR_SCALE_MAX - 1.0)), else_=rating
    )
    retries = sa.func.coalesce(number("retry_count"), 0.0)
    # beyond 2**52 every double is whole (and far above the schema's cap)
    rules.append(Rule("retry_count: not a whole number", (sa.func.abs(retries) < 2.0**52) & (retries != sa.func.round(retries))))
    values["retry_count"] = retries
    return values, rules


# --- schema rules, generated from the pandera model ------------------------------------------

# SQL twins of FeedbackSchema's dataframe checks, by the check's error message.
_DATAFRAME_CHECKS: dict[str, Callable[[Mapping[str, sa.ColumnElement], sa.ColumnElement], sa.ColumnElement]] = {
    "duration_ms is missing for a finished execution": lambda v, ceiling: v["duration_ms"].is_(None)
    & (v["status"].is_(None) | (v["status"] != "in_progress")),
    "completed_at is before started_at": lambda v, ceiling: v["completed_at"] < v["started_at"],
    "completed_at is more than the duration ceiling after started_at": lambda v, ceiling: v[COMPLETED_SPAN] > ceiling,
}


def _column_check(name: str, value: sa.ColumnElement, check: pa.Check, dialect: Dialect) -> Rule:
    stats = check.statistics
    # a built-in check's error is its name and argument; a model may set its own words
    own_words = check.error if check.error and not check.error.startswith(check.name) else None
    if check.name == "greater_than_or_equal_to":
        low = stats["min_value"]
        return Rule(f"{name}: {own_words or f'must be >= {low}'}", value < low)
    if check.name == "less_than_or_equal_to":
        high = stats["max_value"]
        return Rule(f"{name}: {own_words or f'must be <= {high}'}", value > high)
    if check.name == "isin":
        return Rule(f"{name}: not an allowed value", value.not_in(list(stats["allowed_values"])))
    if check.name == "str_length":
        too_short = sa.func.length(value) < (stats.get("min_value") or 0)
        if stats.get("max_value") is not None:
            too_short = too_short | (sa.func.length(value) > stats["max_value"])
        return Rule(f"{name}: empty", too_short)
    if check.name == "str_matches":
        matches = dialect.matches(value, "^" + stats["pattern"])
        if not dialect.pg and stats["pattern"] == VERSION_NAME_PATTERN:
            plain = (sa.func.length(value) > 0) & ~value.op("GLOB", is_comparison=True)(_SQLITE_PLAIN_NAME)
            matches = sa.case((plain, dialect.true()), else_=matches)
        return Rule(f"{name}: not a valid version name", value.is_not(None) & ~matches)
    raise NotImplementedError(f"FeedbackSchema check {check.name!r} on {name!r} has no SQL twin in rules.py")


def schema_rules(values: Mapping[str, sa.ColumnElement], max_duration_ms: float, dialect: Dialect) -> list[Rule]:
    """FeedbackSchema (with the duration ceiling) as SQL rules: dataframe checks, then each
    column's nullability and checks, in the model's column order."""
    schema = feedback_schema(max_duration_ms)
    rules = []
    for check in schema.checks:
        if check.error not in _DATAFRAME_CHECKS:
            raise NotImplementedError(f"FeedbackSchema check {check.error!r} has no SQL twin in rules.py")
        rules.append(Rule(check.error, _DATAFRAME_CHECKS[check.error](values, max_duration_ms)))
    for name, column in schema.columns.items():
        if not column.nullable:
            rules.append(Rule(f"{name}: missing", values[name].is_(None)))
        rules.extend(_column_check(name, values[name], check, dialect) for check in column.checks)
    return rules


def reason_of(rules: list[Rule]) -> sa.ColumnElement:
    """The first broken rule's reason; NULL for a valid row."""
    return sa.case(*((rule.broken, rule.reason) for rule in rules))


def details_of(rules: list[Rule], dialect: Dialect) -> sa.ColumnElement:
    """Every broken rule's reason, '; '-joined (for a row with at least one)."""
    joined = dialect.concat(*(sa.func.coalesce(sa.case((rule.broken, rule.reason + "; ")), "") for rule in rules))
    return sa.func.substr(joined, 1, sa.func.length(joined) - 2)


# The model must be covered at import: a check added to FeedbackSchema without a SQL twin fails here.
schema_rules(
    {c: sa.column(c) for c in [*FeedbackSchema.to_schema().columns, COMPLETED_SPAN]},
    1.0,
    Dialect("sqlite"),
)
