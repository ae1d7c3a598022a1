"""Nothing the collector stores as valid can break a later stage (issue 14, items 2 and 3).

The exact failures reported: one `duration_ms = +Infinity` among 360 rows, `duration_ms = 1e15`,
and the Track-2 quality JSON shapes; then a property-based test that feeds arbitrary rows through
collect -> analysis -> A/B evaluation.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback_loop_dagster.lib import settings as project_settings
from feedback_loop_dagster.lib.analyze.analysis import analyze_partitions
from feedback_loop_dagster.lib.collect.collector import collect_feedback
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import get_engine
from feedback_loop_dagster.lib.storage.migrations import init_databases
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster.lib.validate.ab_results import evaluate_as_of
from feedback_loop_dagster_tests.factories import DAY, QUALITY_JSON, execution, insert_executions
from feedback_loop_dagster_tests.loop.builders import pattern_with_candidate

# Non-finite floats and JSON documents are stored and read by each dialect's own SQL.
pytestmark = pytest.mark.both_dialects

PATTERN = "code-review"
OTHER_PATTERN = "agent|planner, v2"  # not a safe partition key: its key differs from its id


def _quarantine_reasons(engine) -> dict[str, str]:
    q = tables.feedback_quarantine
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(q.c.execution_id, q.c.reason)).all())


def _geomean(engine) -> float:
    m = tables.pattern_metrics
    with engine.connect() as conn:
        return conn.execute(sa.select(m.c.latency_geomean).where(m.c.window_start == DAY)).scalar_one()


def test_one_infinite_duration_among_360_rows_is_quarantined_and_analysis_runs(engine):
    rows = [execution(minute=i * 4, duration_ms=200.0 + i) for i in range(360)]
    rows[123]["duration_ms"] = math.inf
    insert_executions(engine, rows)
    register_pattern_ids(engine, [PATTERN])

    report = collect_feedback(engine, engine, [(PATTERN, DAY)])
    assert (report.source_rows, report.valid_rows, report.quarantined_rows) == (360, 359, 1)
    assert _quarantine_reasons(engine) == {rows[123]["execution_id"]: "duration_ms: not finite"}

    analyze_partitions(engine, [(PATTERN, DAY)])  # raised "LogMeanStats needs finite sums"
    assert math.isfinite(_geomean(engine))


def test_a_duration_above_the_ceiling_is_quarantined_and_leaves_the_geometric_mean_alone(engine):
    rows = [execution(minute=i * 4, duration_ms=300.0 + i) for i in range(100)]
    insert_executions(engine, rows)
    register_pattern_ids(engine, [PATTERN])
    collect_feedback(engine, engine, [(PATTERN, DAY)])
    analyze_partitions(engine, [(PATTERN, DAY)])
    clean = _geomean(engine)

    poison = execution(minute=2, duration_ms=1e15)
    insert_executions(engine, [poison])
    report = collect_feedback(engine, engine, [(PATTERN, DAY)])
    analyze_partitions(engine, [(PATTERN, DAY)])
    assert report.reasons == {"duration_ms: above the duration ceiling": 1}
    assert _quarantine_reasons(engine) == {poison["execution_id"]: "duration_ms: above the duration ceiling"}
    assert _geomean(engine) == pytest.approx(clean)


def test_the_duration_ceiling_is_a_setting_and_a_parameter(engine, monkeypatch):
    # 2 h and 20 h long; and one without a duration, its timestamps 30 h apart
    long_ = execution(duration_ms=2 * 3600e3, completed_at=None)
    longer = execution(duration_ms=20 * 3600e3, completed_at=None)
    started = datetime.combine(DAY, datetime.min.time(), UTC)
    span = execution(duration_ms=None, started_at=started, completed_at=started + timedelta(hours=30))
    insert_executions(engine, [long_, longer, span])
    register_pattern_ids(engine, [PATTERN])

    report = collect_feedback(engine, engine, [(PATTERN, DAY)])
    assert report.reasons == {"completed_at is more than the duration ceiling after started_at": 1}  # 30 h
    monkeypatch.setenv(project_settings.MAX_DURATION_ENV, str(10 * 3600e3))
    assert collect_feedback(engine, engine, [(PATTERN, DAY)]).quarantined_rows == 2
    report = collect_feedback(engine, engine, [(PATTERN, DAY)], max_duration_ms=3600e3)
    assert report.quarantined_rows == 3
    monkeypatch.setenv(project_settings.MAX_DURATION_ENV, "-1")
    with pytest.raises(ValueError, match="FEEDBACK_LOOP_MAX_DURATION_MS='-1' is not a positive number"):
        collect_feedback(engine, engine, [(PATTERN, DAY)])


def test_track_2_quality_json_is_read_as_the_original_query_reads_it(engine):
    rows = {document: execution(quality_score=None, quality_results=document) for document in QUALITY_JSON}
    # a quality_score column beats the JSON, whatever the JSON holds
    both = execution(quality_score=0.3, quality_results='{"score": "high"}')
    insert_executions(engine, [*rows.values(), both])
    register_pattern_ids(engine, [PATTERN])
    collect_feedback(engine, engine, [(PATTERN, DAY)])

    f = tables.feedback
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(f.c.execution_id, f.c.quality_score)).all())
    reasons = _quarantine_reasons(engine)
    got = {doc: reasons.get(row["execution_id"], stored.get(row["execution_id"], "missing")) for doc, row in rows.items()}
    assert got == pytest.approx(QUALITY_JSON)
    assert stored[both["execution_id"]] == pytest.approx(0.3)


# --- property: any row the collector accepts goes through analysis and the A/B engine ---------

_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
_EXTREMES = [math.inf, -math.inf, math.nan, 1e15, -1.0, 0.0, -0.0, 5e-324, 1.7976931348623157e308, 86_400_000.0,
             86_400_000.5, 1.0, 1.0000001, 5.0, 0.5]
_NUMBER = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(_EXTREMES))
_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | _TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["score", "x"]), children, max_size=3),
    max_leaves=6,
)
_QUALITY_RESULTS = st.one_of(
    st.none(), st.sampled_from(list(QUALITY_JSON)), _TEXT, _JSON.map(lambda d: __import__("json").dumps(d))
)
_STATUS = st.one_of(st.sampled_from(["success", "failure", "in_progress", "OK ", "timed_out", "exploded", ""]), _TEXT)
_HUGE = st.sampled_from(["x" * 100_000, "é" * 20_000, "\t\n\r\\N"])


@st.composite
def _rows(draw) -> list[dict]:
    rows = []
    for i in range(draw(st.integers(1, 25))):
        day = DAY + timedelta(days=draw(st.sampled_from([0, 0, 0, 1, -1])))  # some outside the window
        started = datetime.combine(day, datetime.min.time(), UTC) + timedelta(microseconds=draw(st.integers(0, 86_399_999_999)))
        completed = draw(st.one_of(st.none(), st.integers(-10**11, 10**12).map(lambda us: started + timedelta(microseconds=us))))
        rows.append(
            {
                "execution_id": draw(st.one_of(st.just(f"e{i}"), st.just(f"e{i}" + "y" * 5000), st.just("" if i == 0 else f"e{i}"))),
                "pattern_id": draw(st.sampled_from([PATTERN, OTHER_PATTERN])),
                "pattern_version": draw(st.one_of(st.none(), st.sampled_from(["v1", "v2"]), _TEXT)),
                "started_at": started,
                "completed_at": completed,
                "duration_ms": draw(_NUMBER),
                "status": draw(_STATUS),
                "quality_score": draw(_NUMBER),
                "quality_results": draw(_QUALITY_RESULTS),
                "performance_score": draw(_NUMBER),
                "user_rating": draw(_NUMBER),
                "retry_count": draw(st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, 1000, 1001]))),
                "error_type": draw(st.one_of(st.none(), _TEXT)),
                "error_message": draw(st.one_of(st.none(), _TEXT, _HUGE)),
                "unit_id": draw(st.one_of(st.none(), _TEXT)),
            }
        )
    return rows


def _collect_analyse_evaluate(engine, experiment, rows: list[dict]) -> None:
    """Writes `rows` as the whole source, runs the three stages over two patterns x two windows
    and checks the accounting of every partition."""
    with engine.begin() as conn:
        conn.execute(tables.hook_executions.delete())
    insert_executions(engine, rows)
    keys = register_pattern_ids(engine, [PATTERN, OTHER_PATTERN])
    windows = [DAY, DAY + timedelta(days=1)]
    pairs = [(keys[p], w) for p in (PATTERN, OTHER_PATTERN) for w in windows]

    report = collect_feedback(engine, engine, pairs)
    analyze_partitions(engine, pairs)
    with engine.begin() as conn:
        for window in windows:
            evaluate_as_of(conn, experiment, window)

    in_window = Counter((keys[r["pattern_id"]], r["started_at"].date()) for r in rows)
    stored = {}
    with engine.connect() as conn:
        for name, table in (("valid", tables.feedback), ("quarantined", tables.feedback_quarantine)):
            for key, window, n in conn.execute(
                sa.select(table.c.pattern_key, table.c.window_start, sa.func.count()).group_by(table.c.pattern_key, table.c.window_start)
            ):
                stored[(name, key, window)] = n
    for p in report.partitions:
        pair = (p.pattern_key, p.window_start)
        assert p.valid_rows + p.quarantined_rows == p.source_rows == in_window[pair]
        assert stored.get(("valid", *pair), 0) == p.valid_rows and stored.get(("quarantined", *pair), 0) == p.quarantined_rows
        assert sum(p.reasons.values()) == p.quarantined_rows
    assert sum(stored.values()) == sum(n for pair, n in in_window.items() if pair in set(pairs))


def test_any_rows_go_through_collect_analysis_and_ab_without_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'property.db'}"
    engine = get_engine(url)
    init_databases(engine, engine)
    _, _, experiment = pattern_with_candidate(engine)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_rows())
    def check(rows):
        _collect_analyse_evaluate(engine, experiment, rows)

    check()


@pytest.mark.postgres
def test_extreme_rows_go_through_collect_analysis_and_ab_on_postgres(postgres_engine):
    _, _, experiment = pattern_with_candidate(postgres_engine)
    extremes = [
        dict(duration_ms=math.inf), dict(duration_ms=-math.inf), dict(duration_ms=math.nan), dict(duration_ms=1e15),
        dict(duration_ms=5e-324), dict(quality_score=math.inf), dict(quality_score=math.nan), dict(user_rating=1e15),
        dict(performance_score=-math.inf), dict(retry_count=2**31 - 1), dict(retry_count=1001),
        dict(quality_score=None, quality_results='{"score": "0.8"}'), dict(quality_score=None, quality_results="[0.5]"),
        dict(error_message="x" * 100_000), dict(status=" OK "), dict(pattern_version="v2", duration_ms=0.0),
    ]
    rows = [execution(minute=i, **{"pattern_version": "v1" if i % 2 else "v2", **override}) for i, override in enumerate(extremes)]
    rows += [execution(minute=100 + i, pattern_version="v1" if i % 2 else "v2") for i in range(40)]
    _collect_analyse_evaluate(postgres_engine, experiment, rows)
