"""The collector's SQL rules: held to the pandera model, and the same on every path.

* The schema rules that rules.py generates from FeedbackSchema flag exactly the rows (and, per
  row, the columns and dataframe checks) that pandera's own validation flags.
* SQLite and PostgreSQL, and a source in the warehouse's database or in another one, store the
  same valid rows and the same quarantine reasons for the same input.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pandera.errors as pa_errors
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback_loop_dagster.lib.collect import rules
from feedback_loop_dagster.lib.collect.collector import collect_feedback
from feedback_loop_dagster.lib.collect.schema import EXECUTION_STATUSES, feedback_schema
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import get_engine
from feedback_loop_dagster.lib.storage.migrations import init_databases
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster_tests.conftest import create_postgres_database, drop_postgres_database
from feedback_loop_dagster_tests.factories import DAY, QUALITY_JSON, execution, insert_executions

CEILING_MS = 3_600_000.0
START = datetime.combine(DAY, datetime.min.time(), UTC)

# --- the SQL rules against pandera --------------------------------------------------------------

_FLOAT = st.one_of(st.none(), st.floats(-0.5, 1.5), st.sampled_from([0.0, 1.0, -0.0, 5e-324]))
_DURATION = st.one_of(st.none(), st.sampled_from([0.0, -1.0, CEILING_MS, CEILING_MS + 0.001]), st.floats(-10.0, 2 * CEILING_MS))
_VERSION = st.one_of(st.none(), st.sampled_from(["v1", "", " v1", "v1 ", "a\nb", "é", "x\x7f", "v 2"]))
_MICROS = st.integers(-10**9, 2 * 10**10)


@st.composite
def _contract_rows(draw) -> pd.DataFrame:
    n = draw(st.integers(1, 12))
    started = [START + timedelta(microseconds=draw(st.integers(0, 10**10))) for _ in range(n)]
    completed = [draw(st.one_of(st.none(), _MICROS.map(lambda us, s=s: s + timedelta(microseconds=us)))) for s in started]
    return pd.DataFrame(
        {
            "seq": list(range(1, n + 1)),
            "execution_id": [
                draw(st.sampled_from(["e", "", "exec-1"])) + str(i) if i else draw(st.sampled_from(["", "x"])) for i in range(n)
            ],
            "pattern_id": ["p"] * n,
            "pattern_version": [draw(_VERSION) for _ in range(n)],
            "started_at": pd.to_datetime(started, utc=True).astype("datetime64[ns, UTC]"),
            "completed_at": pd.to_datetime(completed, utc=True).astype("datetime64[ns, UTC]"),
            "duration_ms": pd.array([draw(_DURATION) for _ in range(n)], dtype="float64"),
            "status": [draw(st.one_of(st.none(), st.sampled_from([*EXECUTION_STATUSES, "exploded"]))) for _ in range(n)],
            "quality_score": pd.array([draw(_FLOAT) for _ in range(n)], dtype="float64"),
            "performance_score": pd.array([draw(_FLOAT) for _ in range(n)], dtype="float64"),
            "user_rating": pd.array([draw(_FLOAT) for _ in range(n)], dtype="float64"),
            "retry_count": [draw(st.integers(-3, 1003)) for _ in range(n)],
            "error_type": [None] * n,
            "error_message": [None] * n,
            "unit_id": [None] * n,
        }
    )


def _pandera_verdicts(frame: pd.DataFrame) -> dict[int, set[str]]:
    """Per failing row: the columns whose checks it fails, and the dataframe checks it fails."""
    try:
        feedback_schema(CEILING_MS).validate(frame, lazy=True)
    except pa_errors.SchemaErrors as exc:
        cases = exc.failure_cases
        assert not cases["index"].isna().any(), cases  # no schema-wide (dtype) failure
        found: dict[int, set[str]] = {}
        for index, context, column, check in zip(cases["index"], cases["schema_context"], cases["column"], cases["check"], strict=True):
            found.setdefault(int(index), set()).add(column if context == "Column" else str(check))
        return found
    return {}


def _sql_verdicts(engine, frame: pd.DataFrame) -> dict[int, set[str]]:
    """The same, from rules.schema_rules run by the database over the same values."""
    dialect = rules.Dialect(engine.dialect.name)
    scratch = sa.Table(
        "contract_rows",
        sa.MetaData(),
        *(sa.Column(c.name, c.type) for c in tables.feedback.columns if c.name in frame.columns),
    )
    values = {c: scratch.c[c] for c in frame.columns}
    values[rules.COMPLETED_SPAN] = dialect.milliseconds_between(scratch.c.completed_at, scratch.c.started_at)
    checks = rules.schema_rules(values, CEILING_MS, dialect)
    with engine.begin() as conn:
        scratch.drop(conn, checkfirst=True)
        scratch.create(conn)
        conn.execute(scratch.insert(), frame.astype(object).where(frame.notna(), None).to_dict("records"))
        broken = conn.execute(sa.select(scratch.c.seq, *(rule.broken for rule in checks))).all()
    found: dict[int, set[str]] = {}
    for seq, *flags in broken:
        for rule, flag in zip(checks, flags, strict=True):
            if flag:
                column = rule.reason.split(": ", 1)[0]
                found.setdefault(seq - 1, set()).add(column if column in frame.columns else rule.reason)
    return found


@pytest.mark.both_dialects
def test_sql_rules_give_pandera_verdicts(engine):
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_contract_rows())
    def check(frame):
        assert _sql_verdicts(engine, frame) == _pandera_verdicts(frame)

    check()


def test_every_model_check_has_a_sql_twin():
    schema = feedback_schema(CEILING_MS)
    dialect = rules.Dialect("postgresql")
    values = {c: sa.column(c) for c in [*schema.columns, rules.COMPLETED_SPAN]}
    reasons = [rule.reason for rule in rules.schema_rules(values, CEILING_MS, dialect)]
    column_checks = sum(len(c.checks) + (not c.nullable) for c in schema.columns.values())
    assert len(reasons) == len(schema.checks) + column_checks
    assert "duration_ms: above the duration ceiling" in reasons and "retry_count: must be <= 1000" in reasons


# --- the same output on every path ---------------------------------------------------------------


def _nasty_rows() -> list[dict]:
    rows = [execution(execution_id=f"q{i}", quality_score=None, quality_results=doc) for i, doc in enumerate(QUALITY_JSON)]
    overrides = [
        dict(status=" OK "), dict(status="timed_out"), dict(status="exploded"), dict(status=None),
        dict(duration_ms=math.inf), dict(duration_ms=-math.inf), dict(duration_ms=1e15), dict(duration_ms=-5.0),
        dict(duration_ms=None), dict(duration_ms=None, completed_at=None), dict(duration_ms=None, status="running", completed_at=None),
        dict(duration_ms=None, completed_at=START + timedelta(hours=30, microseconds=7)),
        dict(duration_ms=None, completed_at=START + timedelta(hours=1, microseconds=123_457)),
        dict(completed_at=START - timedelta(seconds=1)), dict(quality_score=1.5), dict(quality_score=math.inf),
        dict(performance_score=-0.1), dict(user_rating=5.0), dict(user_rating=3.0), dict(user_rating=5.5),
        dict(user_rating=-math.inf), dict(retry_count=None), dict(retry_count=1001), dict(retry_count=-1),
        dict(pattern_version=""), dict(pattern_version=" v1"), dict(pattern_version="a\nb"), dict(pattern_version=None),
        dict(pattern_version="é v2"), dict(execution_id=""), dict(error_message="tab\t new\n line \\N é 中文"),
        dict(unit_id=None), dict(started_at=START + timedelta(microseconds=1)),
        dict(started_at=START + timedelta(days=1) - timedelta(microseconds=1)),
        dict(started_at=START + timedelta(days=1)),  # the next window: not requested
    ]
    rows += [execution(minute=10 + i, **{"execution_id": f"o{i}", **override}) for i, override in enumerate(overrides)]
    return rows


def _outcome(engine) -> tuple[dict, dict, tuple]:
    f, q, p = tables.feedback, tables.feedback_quarantine, tables.feedback_partitions
    with engine.connect() as conn:
        valid = {r.execution_id: tuple(_plain(v) for v in r) for r in conn.execute(sa.select(f).order_by(f.c.execution_id))}
        bad = {
            r.execution_id: (r.seq, r.reason, r.details, json.loads(r.raw)["execution_id"])
            for r in conn.execute(sa.select(q))
        }
        counts = conn.execute(sa.select(p.c.source_rows, p.c.valid_rows, p.c.quarantined_rows, p.c.max_seq)).one()
    return valid, bad, tuple(counts)


def _plain(value):
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    return value


def _collect(source_url: str, warehouse_url: str, rows: list[dict]):
    source, warehouse = get_engine(source_url), get_engine(warehouse_url)
    init_databases(warehouse, source)
    insert_executions(source, rows)
    register_pattern_ids(warehouse, ["code-review"])
    report = collect_feedback(source, warehouse, [("code-review", DAY)])
    return _outcome(warehouse), report


@pytest.mark.postgres
def test_sqlite_postgres_and_a_source_elsewhere_store_the_same(tmp_path):
    rows = _nasty_rows()
    sqlite_a, sqlite_b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    postgres_a, postgres_b = create_postgres_database(), create_postgres_database()
    try:
        paths = {
            "sqlite": (sqlite_a, sqlite_a),
            "postgresql": (postgres_a, postgres_a),
            "sqlite source, postgresql warehouse": (sqlite_b, postgres_b),
        }
        outcomes = {name: _collect(source, warehouse, rows) for name, (source, warehouse) in paths.items()}
    finally:
        drop_postgres_database(postgres_a)
        drop_postgres_database(postgres_b)

    (valid, bad, counts), report = outcomes["sqlite"]
    assert counts[:3] == (len(rows) - 1, len(valid), len(bad)) and report.valid_rows == len(valid)
    assert len(valid) > 15 and len(bad) > 30  # a real comparison, not between two empty tables
    for name, (outcome, _) in outcomes.items():
        assert outcome[0] == valid, name
        assert outcome[1] == bad, name
        assert outcome[2] == counts, name


@pytest.mark.postgres
def test_a_loosely_typed_postgres_view_is_read_value_by_value(postgres_engine):
    """Text where numbers, timestamps and JSON belong: the safe casts turn a bad value into a
    reason, never into an error that fails the partition."""
    with postgres_engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE hook_executions RENAME TO hook_executions_base")
        conn.exec_driver_sql(
            "CREATE TABLE loose (seq bigint, execution_id text, pattern_id text, started_at text, completed_at text, "
            "duration_ms text, status text, quality_score numeric, quality_results jsonb, retry_count text)"
        )
        conn.exec_driver_sql("CREATE VIEW hook_executions AS SELECT * FROM loose")
        conn.exec_driver_sql(
            "INSERT INTO loose VALUES "
            "(1, 'a', 'code-review', '2026-03-02 10:00:00+00', NULL, ' 250.5 ', 'ok', 0.5, NULL, '1'),"
            "(2, 'b', 'code-review', '2026-03-02T11:00:00Z', NULL, 'fast', 'success', NULL, NULL, NULL),"
            "(3, 'c', 'code-review', '2026-13-45', NULL, '10', 'success', NULL, NULL, '0'),"
            "(4, 'd', 'code-review', '2026-03-02 12:00', '2026-03-02 12:00:01', NULL, 'success', NULL, '{\"score\": \"0.9\"}', '0'),"
            "(5, 'e', 'code-review', '2026-03-02 13:00', NULL, '1e999', 'success', NULL, NULL, '0'),"
            "(6, 'e', 'code-review', '2026-03-02 14:00', NULL, '5', 'success', NULL, NULL, '0'),"
            "(7, 'g', 'code-review', '2026-03-02 15:00', NULL, 'NaN', 'success', 'NaN', NULL, '0'),"
            "(8, 'h', 'code-review', '2026-03-02 16:00', NULL, '5', 'success', 0.1, NULL, '2.5')"
        )
    register_pattern_ids(postgres_engine, ["code-review"])
    report = collect_feedback(postgres_engine, postgres_engine, [("code-review", DAY)])
    with postgres_engine.connect() as conn:
        stored = {r.execution_id: r for r in conn.execute(sa.select(tables.feedback))}
        reasons = dict(conn.execute(sa.select(tables.feedback_quarantine.c.seq, tables.feedback_quarantine.c.reason)).all())
    # row 3's started_at cannot be read, so it belongs to no window: not a source row of this partition
    assert report.source_rows == 7
    assert stored["a"].duration_ms == 250.5 and stored["a"].status == "success" and stored["a"].retry_count == 1
    assert stored["d"].duration_ms == 1000.0 and stored["d"].quality_score == pytest.approx(0.9)
    assert reasons == {
        2: "duration_ms: not a number",
        5: "duration_ms: not finite",
        6: "execution_id: duplicate of an earlier row in this window",
        7: "duration_ms: not finite",
        8: "retry_count: not a whole number",
    }
