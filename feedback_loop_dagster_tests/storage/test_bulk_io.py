"""The hand-written bulk codecs against the ordinary path, on SQLite and PostgreSQL.

`writes.bulk_insert` must store exactly what a plain `conn.execute(table.insert(), records)`
stores, whichever encoding it picks (COPY BINARY by pg_copy, psycopg's rows; sqlite3
executemany); `collector._read_source` (through `reads.read_frames`) must return, chunk by chunk,
exactly the frame `DataFrame.from_records` makes of a plain fetch of the same query (COPY BINARY
by pg_copy, a cursor); and what one writes, the other reads back.
"""

from __future__ import annotations

import math
import warnings
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from feedback_loop_dagster.lib.collect import collector
from feedback_loop_dagster.lib.collect import source as source_module
from feedback_loop_dagster.lib.storage import pg_copy, reads, tables, writes
from feedback_loop_dagster.lib.storage.database import get_engine, is_postgres
from feedback_loop_dagster_tests.factories import DAY, execution

# The codecs are dialect-specific: COPY BINARY on PostgreSQL, executemany on SQLite.
pytestmark = pytest.mark.both_dialects

# --- Writer ----------------------------------------------------------------------------------

STRINGS = [
    "plain",
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "back\\slash\\",
    "\\N",
    "quotes ' \" ` ,;",
    "é 中文 🎉",
    "",
    None,
    "NaN",
    "\\\\N\t\\t",
]
FLOATS = [
    math.inf, -math.inf, -0.0, 1e-300, 0.1 + 0.2, math.nan, 5e-324, 1.7976931348623157e308, 0.1, -2.5, 1 / 3, None
]
DATES = [
    date(2026, 3, 2),
    None,
    date(1, 1, 1),
    date(9999, 12, 31),
    date(1970, 1, 1),
    date(1969, 12, 31),
    date(2000, 1, 1),
    date(2000, 2, 29),
    date(1999, 12, 31),
    date(2024, 10, 27),
    date(2024, 3, 31),
    date(2038, 1, 19),
]
INSTANTS = [
    "2026-03-02 12:34:56.123456789",
    None,
    "1969-12-31 23:59:59.999999999",
    "1970-01-01 00:00:00.000000001",
    "2000-01-01 00:00:00",
    "1999-12-31 23:59:59.000000500",
    "2024-10-27 01:30:00.5",  # 02:30 in Europe/Paris, a wall time that happens twice
    "2024-03-31 02:30:00.000999",  # as a naive time: one Europe/Paris skips
    "1900-01-01 00:00:00.000001",
    "2262-04-11 00:00:00.123",
    "1677-09-22 00:00:00",
    "2038-01-19 03:14:07.999999",
]
N = len(STRINGS)
INT_EXTREMES = {
    "i64": [-(2**63), 2**63 - 1, 0, -1, 1, 2**53 + 1, -(2**53) - 1, 42, 2**31, -(2**31) - 1, 7, 8],
    "i32": [-(2**31), 2**31 - 1, 0, -1, 1, 2**24 + 1, 100, -100, 2**15, -(2**15) - 1, 7, 8],
    "i16": [-(2**15), 2**15 - 1, 0, -1, 1, 255, 256, -256, 127, -128, 7, 8],
}


def _scratch_table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("i64", sa.BigInteger),
        sa.Column("i32", sa.Integer),
        sa.Column("i16", sa.SmallInteger),
        sa.Column("dbl", sa.Float),
        sa.Column("txt", sa.Text),
        sa.Column("str", sa.String),
        sa.Column("day", sa.Date),
        sa.Column("aware", sa.DateTime(timezone=True)),
        sa.Column("naive", sa.DateTime),
    )


@pytest.fixture
def scratch(database_url):
    """(engine, table written by bulk_insert, identical table written by plain inserts)."""
    engine = get_engine(database_url)
    metadata = sa.MetaData()
    bulk, reference = _scratch_table(metadata, "bulk_target"), _scratch_table(metadata, "reference_target")
    metadata.create_all(engine)
    return engine, bulk, reference


@pytest.fixture
def encodings(monkeypatch):
    """The encoding bulk_insert chose for each non-empty frame on PostgreSQL."""
    used: list[str] = []
    binary = pg_copy.binary_blocks

    def spy_binary(*args):
        blocks = binary(*args)
        used.append("binary" if blocks is not None else "rows")
        return blocks

    monkeypatch.setattr(pg_copy, "binary_blocks", spy_binary)
    return used


def _instants(unit: str, tz: str | None) -> pd.Series:
    naive = pd.Series(pd.to_datetime(INSTANTS, format="ISO8601")).astype(f"datetime64[{unit}]")
    if tz is None:
        return naive
    return naive.dt.tz_localize("UTC").dt.tz_convert(tz)


def _frame(first_id: int, *, unit: str = "ns", tz: str = "UTC", ints: str = "int64", rotate: int = 0) -> pd.DataFrame:
    """N rows of nasty values; `ints` picks how the integer columns are held (int64: the extremes,
    no NULL; Int64 / float64 / object: small values and a NULL)."""

    def turn(values):
        return list(values[rotate:]) + list(values[:rotate])

    frame = pd.DataFrame({"id": np.arange(first_id, first_id + N, dtype=np.int64)})
    for name, values in INT_EXTREMES.items():
        if ints == "int64":
            frame[name] = np.array(turn(values), dtype=np.int64)
        else:
            small = [None if i == 3 else (i * 37 - 100) * (1 if name != "i64" else 10**9) for i in range(N)]
            if ints == "float64":  # a double bound for an integer column is rounded, half to even
                small = [v if v is None else v + [0, 0.5, -0.5, 0.25][i % 4] for i, v in enumerate(small)]
            frame[name] = pd.Series(turn(small), dtype={"Int64": "Int64", "float64": "float64", "object": object}[ints])
    frame["dbl"] = pd.Series(turn(FLOATS), dtype="float64")
    frame["txt"] = pd.Series(turn(STRINGS), dtype=object)
    frame["str"] = pd.Series(turn(STRINGS[::-1]), dtype=object)
    frame["day"] = pd.Series(turn(DATES), dtype=object)
    frame["aware"] = _instants(unit, tz)
    frame["naive"] = _instants(unit, None).iloc[::-1].reset_index(drop=True)
    return frame


def _plain(value):
    """What a caller hands SQLAlchemy: None for every missing value, datetimes as datetime."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Discarding nonzero nanoseconds"
            return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _records(frame: pd.DataFrame) -> list[dict]:
    columns = {c: [_plain(v) for v in frame[c].astype(object).tolist()] for c in frame.columns}
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _comparable(rows) -> list[tuple]:
    # repr tells -0.0 from 0.0 and makes NaN equal to itself
    return [tuple(repr(v) if isinstance(v, float) else v for v in row) for row in rows]


def _contents(conn, table: sa.Table) -> tuple[list, list]:
    """The rows as SQLAlchemy returns them, and as the driver returns them (SQLite's stored text)."""
    typed = conn.execute(sa.select(table).order_by(table.c.id)).all()
    raw = conn.exec_driver_sql(f"SELECT * FROM {table.name} ORDER BY id").fetchall()
    return _comparable(typed), _comparable(raw)


def _assert_same_contents(engine, bulk: sa.Table, reference: sa.Table) -> list[tuple]:
    with engine.connect() as conn:
        written, expected = _contents(conn, bulk), _contents(conn, reference)
    assert len(written[0]) == len(expected[0])
    for got, want in zip(written[0], expected[0], strict=True):
        assert got == want
    assert written[1] == expected[1]
    return written[0]


def _write_both(engine, bulk: sa.Table, reference: sa.Table, frames: list[pd.DataFrame]) -> int:
    with engine.begin() as conn:
        written = writes.bulk_insert(conn, bulk, iter(frames))
    with engine.begin() as conn:
        for frame in frames:
            if len(frame):
                conn.execute(reference.insert(), _records(frame))
    return written


def test_bulk_insert_stores_what_plain_inserts_store(scratch, encodings, monkeypatch):
    engine, bulk, reference = scratch
    monkeypatch.setattr(writes, "WRITE_BLOCK_ROWS", 5)  # every frame spans several blocks
    as_text = _frame(101, rotate=1)
    as_text["dbl"] = np.arange(N, dtype=np.int64) - 3  # int64 into a double: not a binary pair
    mixed = _frame(601, ints="float64", rotate=5)
    mixed["txt"] = pd.Series(["a", 3, 2.5, None, "tab\tx", -7.25, 2**62, "é", "", "\\N", 7, None], dtype=object)
    frames = [
        _frame(1),  # COPY BINARY: every (dtype, column type) pair is one it encodes
        _frame(51, unit="us", tz="Europe/Paris", rotate=2),  # same columns: the same COPY
        _frame(0).iloc[:0],  # an empty frame in the stream
        as_text,  # int64 into a double column: psycopg's rows
        _frame(201, unit="ms", tz="America/St_Johns", rotate=3).assign(dbl=np.arange(N, dtype=np.int64)),
        _frame(301, ints="Int64", rotate=4),  # nullable integers
        _frame(401, ints="object", unit="us", tz="Asia/Kolkata", rotate=6),
        _frame(501, ints="float64", rotate=9),  # integers held as doubles (NaN for NULL): psycopg's rows
        mixed,  # an object column of mixed types
        _frame(701, unit="ms", rotate=7)[["naive", "id", "txt", "day"]],  # a subset, reordered
        _frame(801, unit="ns", tz="Europe/Paris", rotate=8),
    ]
    written = _write_both(engine, bulk, reference, frames)
    assert written == sum(len(f) for f in frames)

    rows = _assert_same_contents(engine, bulk, reference)
    assert len(rows) == written
    # the reference really holds the nasty values (the comparison is not between two empty tables)
    txt = bulk.columns.keys().index("txt")
    assert {r[txt] for r in rows} >= set(STRINGS)
    if is_postgres(engine):
        # every encoding was exercised, and a non-UTC zone was stored as the same instant
        assert {"binary", "rows"} <= set(encodings)
        with engine.connect() as conn:
            aware = conn.execute(sa.select(bulk.c.aware).where(bulk.c.id == 51)).scalar_one()
        assert aware == _instants("us", "UTC")[0].to_pydatetime()


@pytest.mark.parametrize("encoding", ["binary", "rows"])
def test_duplicate_key_raises_integrity_error_and_rolls_the_caller_back(scratch, monkeypatch, encoding):
    engine, bulk, _ = scratch
    monkeypatch.setattr(writes, "WRITE_BLOCK_ROWS", 2)
    with engine.begin() as conn:
        conn.execute(bulk.insert(), [{"id": 1, "txt": "kept"}])
    frame = _frame(10)
    if encoding == "rows":
        frame["txt"] = pd.Series([1, "x"] * (N // 2), dtype=object)
    frame.loc[N - 1, "id"] = 1  # the duplicate is in the last block

    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as conn:
            conn.execute(bulk.insert(), [{"id": 2, "txt": "rolled back"}])
            writes.bulk_insert(conn, bulk, iter([frame.iloc[:4], frame.iloc[4:]]))
    with engine.connect() as conn:
        assert conn.execute(sa.select(bulk.c.id, bulk.c.txt)).all() == [(1, "kept")]

    # the connection went back to the pool usable
    with engine.begin() as conn:
        assert writes.bulk_insert(conn, bulk, frame.iloc[:-1]) == N - 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(bulk)).scalar_one() == N


@pytest.mark.parametrize("encoding", ["binary", "rows"])
def test_nul_in_a_string_is_never_silently_truncated(scratch, encoding):
    engine, bulk, reference = scratch
    frame = pd.DataFrame({"id": [1, 2, 3], "txt": ["before", "a\x00b", "after"]})
    if encoding == "rows":
        frame["str"] = pd.Series([1, "x", 2.5], dtype=object)
    if is_postgres(engine):
        # PostgreSQL text cannot hold NUL: refused, as a plain insert refuses it
        with pytest.raises(sa.exc.DataError):
            with engine.begin() as conn:
                conn.execute(reference.insert(), _records(frame))
        with pytest.raises(sa.exc.DataError):
            with engine.begin() as conn:
                writes.bulk_insert(conn, bulk, frame)
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(bulk)).scalar_one() == 0
    else:
        # SQLite keeps it: all of it
        _write_both(engine, bulk, reference, [frame])
        rows = _assert_same_contents(engine, bulk, reference)
        assert rows[1][bulk.columns.keys().index("txt")] == "a\x00b"


def test_out_of_range_integer_is_treated_like_a_plain_insert(scratch):
    engine, bulk, reference = scratch
    frame = pd.DataFrame({"id": [1, 2], "i16": np.array([1, 2**15], dtype=np.int64)})
    if is_postgres(engine):
        with pytest.raises(sa.exc.DataError):
            with engine.begin() as conn:
                conn.execute(reference.insert(), _records(frame))
        with pytest.raises(sa.exc.DataError):
            with engine.begin() as conn:
                writes.bulk_insert(conn, bulk, frame)
    else:  # SQLite integers are 64-bit whatever the declared type
        _write_both(engine, bulk, reference, [frame])
    _assert_same_contents(engine, bulk, reference)


# --- Reader ----------------------------------------------------------------------------------

PATTERNS = ["code-review", "agent|planner, v2"]
PAIRS = [("code-review", DAY), ("agent-planner", DAY + timedelta(days=1))]
TEXTS = ["ok", "tab\tsep", "line\nbreak", "cr\r", "back\\slash", "\\N", "é 中文 🎉", "", "NaN", "a,b;\"c'", None]


def _source_rows(count: int = 240) -> list[dict]:
    rows = []
    for i in range(count):
        day = DAY + timedelta(days=i % 3)  # the third day is outside the requested box
        pattern = PATTERNS[i % 2] if i % 17 else "not-requested"
        row = execution(
            day=day,
            minute=i % 1400,
            execution_id=f"exec-{i}-{TEXTS[i % len(TEXTS)] or 'x'}",
            pattern_id=pattern,
            pattern_version=None,  # a column NULL throughout
            status=TEXTS[(i + 1) % len(TEXTS)],
            error_message=TEXTS[i % len(TEXTS)],
            error_type=None if i < 60 else TEXTS[(i + 3) % len(TEXTS)],  # NULL throughout early chunks
            unit_id=f"user-{i % 5}",
            retry_count=None if i % 13 == 0 else i % 4,  # a NULL in some chunks only
            duration_ms=[250.0, None, 0.1 + 0.2, 1e-300, -0.0, 5e-324][i % 6],
            quality_score=None if i % 4 == 0 else i / 7,
            user_rating=None if i < 100 else 0.5,
        )
        started = row["started_at"] + timedelta(microseconds=(i * 7919) % 1_000_000)
        row["started_at"] = started
        row["completed_at"] = None if i % 9 == 0 else started + timedelta(seconds=i, microseconds=1)
        if i in (5, 150):
            row["completed_at"] = datetime(2300, 1, 1, 0, 0, 0, 5, tzinfo=UTC)  # beyond datetime64[ns]
        rows.append(row)
    return rows


def _insert_source(engine, rows: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(tables.hook_executions.insert(), rows)


@pytest.fixture
def copy_formats(monkeypatch):
    """How `_read_source` turned each chunk into a frame on PostgreSQL (COPY BINARY, psycopg's
    loader for a value COPY BINARY cannot take, or a plain fetch)."""
    used: list[str] = []
    for module, name, label in (
        (pg_copy, "_binary_frame", "binary"), (pg_copy, "_loaded_column", "loader"), (reads, "_fetched_frames", "fetch")
    ):
        original = getattr(module, name)

        def spy(*args, _original=original, _label=label):
            used.append(_label)
            return _original(*args)

        monkeypatch.setattr(module, name, spy)
    return used


def _assert_reads_like_a_fetch(source, chunk_rows: int, columns=None) -> list[pd.DataFrame]:
    columns = columns or source_module.source_columns(source)
    pattern_ids = sorted(PATTERNS)
    query = source_module.rows_query(columns, pattern_ids, min(w for _, w in PAIRS), max(w for _, w in PAIRS))
    with source.connect() as conn:
        rows = [tuple(r) for r in conn.execute(query).fetchall()]
    expected = [
        pd.DataFrame.from_records(rows[i : i + chunk_rows], columns=list(columns), coerce_float=False)
        for i in range(0, len(rows), chunk_rows)
    ]
    chunks = list(collector._read_source(source, columns, pattern_ids, PAIRS, chunk_rows))
    assert len(chunks) == len(expected)
    for got, want in zip(chunks, expected, strict=True):
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    return chunks


def test_read_source_chunks_equal_a_plain_fetch(engine, copy_formats):
    rows = _source_rows()
    _insert_source(engine, rows)
    chunks = _assert_reads_like_a_fetch(engine, chunk_rows=7)
    if is_postgres(engine):
        # COPY BINARY, and psycopg's loader for the timestamp beyond datetime64[ns]
        assert set(copy_formats) == {"binary", "loader"} and copy_formats.count("binary") == len(chunks)

    in_box = [r for r in rows if r["pattern_id"] in PATTERNS and r["started_at"].date() < DAY + timedelta(days=2)]
    assert sum(map(len, chunks)) == len(in_box) > 7 * 10
    # what the chunks cover: NULL-only columns, text with separators, and both shapes of ints
    assert all(chunk["pattern_version"].isna().all() for chunk in chunks)
    assert {v for chunk in chunks for v in chunk["error_message"]} >= set(TEXTS) - {None}
    assert {str(chunk["retry_count"].dtype) for chunk in chunks} == {"int64", "float64"}
    assert {str(chunk["user_rating"].dtype) for chunk in chunks} == {"object", "float64"}
    # one chunk the size of everything
    _assert_reads_like_a_fetch(engine, chunk_rows=10_000)


@pytest.mark.postgres
def test_read_source_fetch_path_in_another_session_zone(postgres_engine, copy_formats):
    # extra_float_digits=0 rules out COPY BINARY (a double's binary value is not what its
    # 15-digit text gives): a plain fetch; the session zone is the one the datetimes carry.
    _insert_source(postgres_engine, _source_rows())
    source = sa.create_engine(
        postgres_engine.url, connect_args={"options": "-c extra_float_digits=0 -c timezone=Europe/Paris"}
    )
    try:
        chunks = _assert_reads_like_a_fetch(source, chunk_rows=9)
        assert str(chunks[0]["started_at"].dtype) == "datetime64[ns, Europe/Paris]"
        assert copy_formats == ["fetch"]
    finally:
        source.dispose()


@pytest.mark.postgres
def test_read_source_from_views_with_other_column_types(postgres_engine, copy_formats):
    rows = _source_rows(120)
    for i, row in enumerate(rows):
        row["quality_results"] = None if i % 3 else f'{{"score": {i / 10}, "note": "tab\\t é {i}", "n": null}}'
        row["quality_score"] = [math.nan, math.inf, -math.inf, 0.1 + 0.2, None, 1e-300][i % 6]
        row["duration_ms"] = [math.nan, math.inf, 0.1 + 0.2, None, 1e30, 1 / 3][i % 6]  # fit a real
    _insert_source(postgres_engine, rows)
    views = [
        # every type still one COPY BINARY reads, but not the contract's
        (
            "binary",
            "seq::int AS seq, execution_id::varchar AS execution_id, pattern_id, "
            "started_at::timestamp AS started_at, completed_at, status::char(12) AS status, "
            "retry_count::smallint AS retry_count, quality_score, error_message",
        ),
        # a date, which COPY BINARY reads too
        (
            "binary",
            "seq, execution_id, pattern_id, started_at, status, completed_at::date AS completed_at, unit_id",
        ),
        # types only psycopg's loaders read: a plain fetch
        (
            "fetch",
            "seq, execution_id, pattern_id, started_at, status, quality_score::numeric AS quality_score, "
            "quality_results::json AS quality_results, duration_ms::real AS duration_ms, "
            "retry_count::numeric(10, 2) AS retry_count, error_message",
        ),
        (
            "fetch",
            "seq, execution_id, pattern_id, started_at, status, quality_results::jsonb AS quality_results, "
            "completed_at::date AS completed_at, unit_id",
        ),
    ]
    with postgres_engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE hook_executions RENAME TO hook_executions_base")
    for copy_format, select in views:
        with postgres_engine.begin() as conn:
            conn.exec_driver_sql("DROP VIEW IF EXISTS hook_executions")
            conn.exec_driver_sql(f"CREATE VIEW hook_executions AS SELECT {select} FROM hook_executions_base")
        copy_formats.clear()
        chunks = _assert_reads_like_a_fetch(postgres_engine, chunk_rows=8)
        assert sum(map(len, chunks)) > 40
        assert set(copy_formats) - {"loader"} == {copy_format}, select


def test_what_bulk_insert_writes_read_frames_reads_back(scratch, encodings):
    """The round trip through both halves of pg_copy (and their SQLite counterparts)."""
    engine, bulk, _ = scratch
    frame = _frame(1, unit="us", tz="UTC")
    with engine.begin() as conn:
        assert writes.bulk_insert(conn, bulk, frame) == N
    with engine.connect() as conn:
        (back,) = reads.read_frames(conn, sa.select(bulk).order_by(bulk.c.id), list(frame.columns), 100)
    if is_postgres(engine):
        assert encodings == ["binary"]
        for column in ("id", "i64", "i32", "i16", "txt", "str", "day"):
            assert [_plain(v) for v in back[column]] == [_plain(v) for v in frame[column]], column
        # (a NaN is a missing value: written as NULL, read back as NaN, the float column's NULL)
        assert _comparable([[_plain(v) for v in back["dbl"]]]) == _comparable([[_plain(v) for v in frame["dbl"]]])
        pd.testing.assert_series_equal(back["aware"].dt.tz_convert("UTC"), frame["aware"].astype("datetime64[ns, UTC]"))
        pd.testing.assert_series_equal(back["naive"], frame["naive"].astype("datetime64[ns]"))
    else:  # SQLite hands back its stored text for dates and instants
        assert back["id"].tolist() == frame["id"].tolist() and back["txt"].tolist() == frame["txt"].tolist()
