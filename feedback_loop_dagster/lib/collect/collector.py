"""Collect a set of (pattern, window) partitions inside the warehouse database.

Set-based and in-database: the requested partitions go into a temporary table, and two
`INSERT ... SELECT` statements (valid rows into `feedback`, the rest into `feedback_quarantine`
with their reason) run the rules of rules.py over the source, so no row travels through Python
and a range run of hundreds of partitions costs one scan. One warehouse transaction replaces
the partitions' rows, so a crash leaves them as they were. A source in another database is
first streamed into a temporary table of the warehouse (the same rules then run on it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from feedback_loop_dagster.lib import settings
from feedback_loop_dagster.lib.collect import rules
from feedback_loop_dagster.lib.collect.source import SOURCE_COLUMNS, column_types, source_columns, unique_execution_ids
from feedback_loop_dagster.lib.collect.source import relation as source_relation
from feedback_loop_dagster.lib.collect.source import rows_query as source_rows_query
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.partition_key_map import pattern_ids_for_keys
from feedback_loop_dagster.lib.storage.partition_rows import delete_partition_rows
from feedback_loop_dagster.lib.storage.reads import read_frames
from feedback_loop_dagster.lib.storage.upserts import upsert
from feedback_loop_dagster.lib.storage.writes import bulk_insert

CHUNK_ROWS = 200_000
PREVIEW_ROWS = 5  # per partition, valid and quarantined
WINDOW = timedelta(days=1)
FEEDBACK_COLUMNS = tuple(c.name for c in tables.feedback.columns)
QUARANTINE_COLUMNS = tuple(c.name for c in tables.feedback_quarantine.columns)


@dataclass(frozen=True)
class PartitionCounts:
    """One partition's accounting (valid + quarantined = source rows), its quarantine reasons
    and the first rows of each kind, for that partition's own materialisation metadata."""

    pattern_key: str
    window_start: date
    pattern_id: str
    source_rows: int
    valid_rows: int
    quarantined_rows: int
    reasons: Counter = field(default_factory=Counter, compare=False)
    preview_valid: pd.DataFrame = field(default_factory=pd.DataFrame, compare=False, repr=False)
    preview_quarantined: pd.DataFrame = field(default_factory=pd.DataFrame, compare=False, repr=False)
    max_seq: int | None = None  # the highest source seq collected, for the sensor's bookkeeping

    @property
    def invalid_share(self) -> float:
        return self.quarantined_rows / self.source_rows if self.source_rows else 0.0


@dataclass
class CollectionReport:
    partitions: list[PartitionCounts]

    @property
    def source_rows(self) -> int:
        return sum(p.source_rows for p in self.partitions)

    @property
    def valid_rows(self) -> int:
        return sum(p.valid_rows for p in self.partitions)

    @property
    def quarantined_rows(self) -> int:
        return sum(p.quarantined_rows for p in self.partitions)

    @property
    def reasons(self) -> Counter:
        return sum((p.reasons for p in self.partitions), Counter())


def window_of(started_at: pd.Series) -> pd.Series:
    """The daily window (UTC date) an execution belongs to."""
    return started_at.dt.floor("D").dt.date


def collect_feedback(
    source: Engine,
    warehouse: Engine,
    partitions: Sequence[tuple[str, date]],
    chunk_rows: int = CHUNK_ROWS,
    max_duration_ms: float | None = None,
) -> CollectionReport:
    """Replace the warehouse rows of `partitions` ((pattern_key, window_start) pairs) from the source.

    `max_duration_ms`: the duration ceiling (default: settings.max_duration_ms(), 24 h unless
    FEEDBACK_LOOP_MAX_DURATION_MS says otherwise); longer executions are quarantined.
    `chunk_rows`: rows per chunk when a source in another database is streamed over."""
    ceiling = settings.max_duration_ms() if max_duration_ms is None else float(max_duration_ms)
    pairs = sorted(set(partitions))
    if not pairs:
        return CollectionReport(partitions=[])
    ids_by_key = pattern_ids_for_keys(warehouse, {k for k, _ in pairs})
    columns = source_columns(source)
    dialect = rules.Dialect(warehouse.dialect.name)
    unique_ids = unique_execution_ids(source)

    with warehouse.begin() as conn:
        prepare_transaction(conn, dialect)
        wanted = _requested(conn, pairs, ids_by_key)
        if _same_database(source, warehouse):
            relation, kinds = source_relation(columns), source_kinds(source, columns)
        else:
            relation, kinds = _staged(conn, source, columns, ids_by_key, pairs, chunk_rows)
        for table in (tables.feedback, tables.feedback_quarantine):
            delete_partition_rows(conn, table, pairs)
        _store(conn, relation, columns, kinds, wanted, dialect, ceiling, unique_ids)
        report = CollectionReport(partitions=_partition_reports(conn, wanted, pairs, ids_by_key, dialect))
        upsert(conn, tables.feedback_partitions, _accounting_rows(report), ["pattern_key", "window_start"])
        for temporary in (wanted, relation):
            if isinstance(temporary, sa.Table):
                temporary.drop(conn)
    return report


def prepare_transaction(conn: Connection, dialect: rules.Dialect) -> None:
    """What the rules need of a PostgreSQL transaction: UTC (a naive source timestamp is UTC)
    and the session's safe casts."""
    if dialect.pg:
        conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
        for statement in rules.PG_SAFE_CASTS:
            conn.exec_driver_sql(statement)


def checked_rows(
    relation: sa.TableClause,
    columns: Sequence[str],
    kinds: Mapping[str, str],
    wanted: sa.Table,
    dialect: rules.Dialect,
    max_duration_ms: float,
    unique_ids: bool,
    skip_stored: bool = False,
) -> sa.Subquery:
    """Every source row of the wanted partitions: its contract values, `reason` (NULL when valid),
    `details` and `raw` (the source row as JSON); with `skip_stored`, only the rows whose
    execution_id `feedback` does not hold for their partition. The benchmark's in-database row
    uses it too."""
    rows = _requested_rows(relation, columns, kinds, wanted, dialect, skip_stored)
    b = _parsed_rows(rows, columns, kinds, dialect, unique_ids)

    # The contract's values, and the parse rules as flags.
    values, parse_rules = rules.contract_values(b.c, dialect)
    stage = [
        b.c.pattern_key,
        b.c.window_start,
        *(b.c[f"source_{n}"] for n in columns),
        *(v.label(n) for n, v in values.items()),
        *(rule.broken.label(f"parse_{i}") for i, rule in enumerate(parse_rules)),
    ]
    # not fenced: the rules below read these cheap values inline
    c = sa.select(*stage, *([] if unique_ids else [b.c.occurrence])).subquery("contract")

    def checks(row) -> list[rules.Rule]:
        found = [rules.Rule(rule.reason, dialect.is_set(row[f"parse_{i}"])) for i, rule in enumerate(parse_rules)]
        if not unique_ids:
            found.append(
                rules.Rule("execution_id: duplicate of an earlier row in this window", row.execution_id.is_not(None) & (row.occurrence > 1))
            )
        return found + rules.schema_rules({n: row[n] for n in values}, max_duration_ms, dialect)

    d = sa.select(c, rules.reason_of(checks(c.c)).label("reason")).offset(0).subquery("reasoned")
    # details and raw for quarantined rows only
    bad = d.c.reason.is_not(None)
    return sa.select(
        d.c.pattern_key,
        d.c.window_start,
        *(d.c[n] for n in values),
        d.c.reason,
        sa.case((bad, rules.details_of(checks(d.c), dialect))).label("details"),
        sa.case((bad, _raw_json({n: d.c[f"source_{n}"] for n in columns}, columns, dialect))).label("raw"),
    ).subquery("checked")


def _requested_rows(
    relation: sa.TableClause,
    columns: Sequence[str],
    kinds: Mapping[str, str],
    wanted: sa.Table,
    dialect: rules.Dialect,
    skip_stored: bool,
) -> sa.Subquery:
    """The source rows of the wanted partitions (a day either side of each window), every contract
    column (NULL where the source lacks it) and the quality document parsed once."""
    s = relation.c
    raw = {c: (s[c] if c in columns else sa.null()) for c in SOURCE_COLUMNS}
    on = s["pattern_id"] == wanted.c.pattern_id
    if dialect.pg and kinds["started_at"] == rules.TIMESTAMP:
        # the UTC day as a join key (a hash join on (pattern, day)), and the bounds for an index
        day = sa.cast(sa.func.timezone("UTC", sa.cast(s["started_at"], sa.DateTime(timezone=True))), sa.Date)
        on &= (day == wanted.c.window_start) & (s["started_at"] >= wanted.c.lo) & (s["started_at"] < wanted.c.hi)
    elif not dialect.pg:  # a day either side, as text: the source's index still serves
        on &= (s["started_at"] >= wanted.c.lo_text) & (s["started_at"] < wanted.c.hi_text)
    read_json = raw["quality_score"].is_(None) & raw["quality_results"].is_not(None)
    # The source rows with the quality document parsed once (OFFSET 0 keeps each value computed
    # once per row: the database would otherwise inline the subquery and repeat the expression
    # wherever a rule reads the value).
    return (
        sa.select(
            wanted.c.pattern_key,
            wanted.c.window_start,
            wanted.c.lo,
            wanted.c.hi,
            *(value.label(name) for name, value in raw.items()),
            sa.case((read_json, dialect.quality_document(raw["quality_results"], kinds["quality_results"]))).label(
                rules.QUALITY_DOCUMENT
            ),
        )
        .select_from(relation.join(wanted, on))
        .where(~_stored(wanted, s["execution_id"]) if skip_stored else sa.true())
        .offset(0)
        .subquery("source_rows")
    )


def _parsed_rows(
    rows: sa.Subquery, columns: Sequence[str], kinds: Mapping[str, str], dialect: rules.Dialect, unique_ids: bool
) -> sa.Subquery:
    """`rows` with each column read as the contract's type, in the requested window only."""
    source = {name: rows.c[name] for name in [*SOURCE_COLUMNS, rules.QUALITY_DOCUMENT]}

    parsed = rules.parsed_values(source, kinds, dialect)
    started = parsed["started_at"]
    # the source's own values travel along, for the quarantine's `raw` (only quarantined rows pay for it)
    stage = [rows.c.pattern_key, rows.c.window_start, *(rows.c[n].label(f"source_{n}") for n in columns)]
    stage += [v.label(n) for n, v in parsed.items()]
    if not unique_ids:
        # A repeated execution_id within a partition: the lowest seq wins.
        stage.append(
            sa.func.row_number()
            .over(partition_by=[rows.c.pattern_key, rows.c.window_start, parsed["execution_id"]], order_by=rows.c.seq)
            .label("occurrence")
        )
    return sa.select(*stage).where((started >= rows.c.lo) & (started < rows.c.hi)).offset(0).subquery("parsed")


def _store(conn, relation, columns, kinds, wanted, dialect: rules.Dialect, ceiling: float, unique_ids: bool) -> None:
    """Valid rows into `feedback`, the others into `feedback_quarantine` with their reason."""
    checked = checked_rows(relation, columns, kinds, wanted, dialect, ceiling, unique_ids)
    valid = sa.select(*(_feedback_value(checked, c) for c in FEEDBACK_COLUMNS)).where(checked.c.reason.is_(None))
    store_valid = tables.feedback.insert().from_select(FEEDBACK_COLUMNS, valid)
    if dialect.pg:
        # One statement, one pass of the rules: the checked rows are a CTE both inserts read.
        shared = sa.select(checked).cte("checked_rows")
        store_valid = tables.feedback.insert().from_select(
            FEEDBACK_COLUMNS, sa.select(*(_feedback_value(shared, c) for c in FEEDBACK_COLUMNS)).where(shared.c.reason.is_(None))
        )
        rest = shared
    else:
        conn.execute(store_valid)
        # The rows just stored are valid: where execution ids are unique, only the others are
        # checked again (a few percent), instead of every row a second time.
        rest = checked_rows(relation, columns, kinds, wanted, dialect, ceiling, unique_ids, skip_stored=unique_ids)
    store_rest = tables.feedback_quarantine.insert().from_select(
        QUARANTINE_COLUMNS, sa.select(*(_quarantine_value(rest, c) for c in QUARANTINE_COLUMNS)).where(rest.c.reason.is_not(None))
    )
    if dialect.pg:
        store_rest = store_rest.add_cte(store_valid.cte("stored_valid"))
    conn.execute(store_rest)


def _stored(wanted: sa.Table, execution_id: sa.ColumnElement) -> sa.ColumnElement:
    f = tables.feedback
    return sa.exists().where(
        f.c.pattern_key == wanted.c.pattern_key, f.c.window_start == wanted.c.window_start, f.c.execution_id == execution_id
    )


def _feedback_value(checked: sa.Subquery, column: str) -> sa.ColumnElement:
    if column == "retry_count":
        return sa.cast(checked.c.retry_count, sa.Integer)
    return checked.c[column]


def _quarantine_value(checked: sa.Subquery, column: str) -> sa.ColumnElement:
    if column == "seq":
        return sa.func.coalesce(checked.c.seq, 0)  # a NULL seq is quarantined ("seq: missing")
    return checked.c[column]


def _raw_json(source: Mapping[str, sa.ColumnElement], columns: Sequence[str], dialect: rules.Dialect) -> sa.ColumnElement:
    """The source row as a JSON object (what a quarantined row looked like before any parsing)."""
    if dialect.pg:
        return sa.cast(sa.func.json_build_object(*(x for c in columns for x in (sa.literal_column(f"'{c}'"), source[c]))), sa.Text)

    def value(v):  # SQLite writes infinity as Inf, which is not JSON: as PostgreSQL, a string
        return sa.case((dialect.non_finite(v), sa.case((v > 0, "Infinity"), else_="-Infinity")), else_=v)

    return sa.func.json_object(*(x for c in columns for x in (sa.literal_column(f"'{c}'"), value(source[c]))))


def _requested(conn: Connection, pairs: Sequence[tuple[str, date]], ids_by_key: Mapping[str, str]) -> sa.Table:
    """A temporary table of the requested partitions with their UTC bounds (timestamps, and on
    SQLite also the bare dates a day either side, which the source's index can range over)."""
    wanted = sa.Table(
        "fl_requested_partitions",
        sa.MetaData(),
        sa.Column("pattern_key", sa.Text, primary_key=True),
        sa.Column("window_start", sa.Date, primary_key=True),
        sa.Column("pattern_id", sa.Text, nullable=False),
        sa.Column("lo", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hi", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lo_text", sa.Text, nullable=False),
        sa.Column("hi_text", sa.Text, nullable=False),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )
    wanted.drop(conn, checkfirst=True)
    wanted.create(conn)
    rows = []
    for key, window in pairs:
        lo = datetime.combine(window, datetime.min.time(), UTC)
        rows.append(
            {
                "pattern_key": key,
                "window_start": window,
                "pattern_id": ids_by_key[key],
                "lo": lo,
                "hi": lo + WINDOW,
                "lo_text": (window - WINDOW).isoformat(),
                "hi_text": (window + 2 * WINDOW).isoformat(),
            }
        )
    conn.execute(wanted.insert(), rows)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {wanted.name}")  # so the planner knows it is the small side
    return wanted


def _same_database(source: Engine, warehouse: Engine) -> bool:
    return source is warehouse or source.url.render_as_string(hide_password=False) == warehouse.url.render_as_string(
        hide_password=False
    )


def source_kinds(engine: Engine, columns: Sequence[str]) -> dict[str, str]:
    """How each source column is typed, which decides how the rules read it (rules.NUMBER, ...).

    SQLite types are only affinities (a REAL column keeps text), so its columns read as TEXT
    once they are in PostgreSQL; on SQLite itself the rules look at each value's own type."""
    kinds = dict.fromkeys(SOURCE_COLUMNS, rules.TEXT)
    if engine.dialect.name != "postgresql":
        return kinds
    for name, type_ in column_types(engine).items():
        if name in columns:
            kinds[name] = _kind(type_)
    return kinds


def _kind(type_: sa.types.TypeEngine) -> str:
    if isinstance(type_, sa.Integer | sa.Float | sa.Numeric):
        return rules.NUMBER
    if isinstance(type_, sa.DateTime | sa.Date):
        return rules.TIMESTAMP
    if isinstance(type_, sa.JSON):
        return rules.JSON
    return rules.TEXT


def _staged(
    conn: Connection,
    source: Engine,
    columns: Sequence[str],
    ids_by_key: Mapping[str, str],
    pairs: Sequence[tuple[str, date]],
    chunk_rows: int,
) -> tuple[sa.Table, dict[str, str]]:
    """The requested rows of a source in another database, streamed into a temporary table of the
    warehouse: columns typed as in the source where the source's type is a contract type, text
    otherwise (so a malformed value still reaches the rules as a value)."""
    kinds = {c: rules.TEXT if k == rules.JSON else k for c, k in source_kinds(source, columns).items()}
    types = {rules.NUMBER: sa.Float, rules.TIMESTAMP: sa.DateTime(timezone=True), rules.TEXT: sa.Text}
    staged = sa.Table(
        "fl_source_rows",
        sa.MetaData(),
        *(sa.Column(c, sa.BigInteger if c == "seq" else types[kinds[c]]) for c in columns),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )
    staged.drop(conn, checkfirst=True)
    staged.create(conn)
    bulk_insert(conn, staged, _utc_frames(_read_source(source, columns, sorted(ids_by_key.values()), pairs, chunk_rows)))
    return staged, kinds


def _utc_frames(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Zoned timestamps in UTC (SQLite stores their wall time)."""
    for frame in frames:
        for column in frame.columns:
            if isinstance(frame[column].dtype, pd.DatetimeTZDtype):
                frame[column] = frame[column].dt.tz_convert("UTC")
        yield frame


def _partition_reports(
    conn: Connection, wanted: sa.Table, pairs: Sequence[tuple[str, date]], ids_by_key: Mapping[str, str], dialect: rules.Dialect
) -> list[PartitionCounts]:
    """Per partition: the rows each table now holds, the quarantine reasons and previews."""
    f, q = tables.feedback, tables.feedback_quarantine
    valid: dict[tuple[str, date], int] = {}
    max_seq: dict[tuple[str, date], int] = {}
    for key, window, n, seq in conn.execute(
        sa.select(f.c.pattern_key, f.c.window_start, sa.func.count(), sa.func.max(f.c.seq))
        .select_from(f.join(wanted, (f.c.pattern_key == wanted.c.pattern_key) & (f.c.window_start == wanted.c.window_start)))
        .group_by(f.c.pattern_key, f.c.window_start)
    ):
        valid[(key, _as_date(window))] = n
        max_seq[(key, _as_date(window))] = int(seq)
    reasons: dict[tuple[str, date], Counter] = {}
    for key, window, reason, n, seq in conn.execute(
        sa.select(q.c.pattern_key, q.c.window_start, q.c.reason, sa.func.count(), sa.func.max(q.c.seq))
        .select_from(q.join(wanted, (q.c.pattern_key == wanted.c.pattern_key) & (q.c.window_start == wanted.c.window_start)))
        .group_by(q.c.pattern_key, q.c.window_start, q.c.reason)
    ):
        pair = (key, _as_date(window))
        reasons.setdefault(pair, Counter())[reason] = n
        max_seq[pair] = max(int(seq), max_seq.get(pair, 0))
    previews_valid = _previews(conn, f, wanted, dialect)
    previews_bad = _previews(conn, q, wanted, dialect)
    reports = []
    for key, window in pairs:
        counted = reasons.get((key, window), Counter())
        good, bad = valid.get((key, window), 0), sum(counted.values())
        reports.append(
            PartitionCounts(
                pattern_key=key,
                window_start=window,
                pattern_id=ids_by_key[key],
                source_rows=good + bad,
                valid_rows=good,
                quarantined_rows=bad,
                reasons=counted,
                preview_valid=previews_valid.get((key, window), pd.DataFrame(columns=list(FEEDBACK_COLUMNS))),
                preview_quarantined=previews_bad.get((key, window), pd.DataFrame(columns=list(QUARANTINE_COLUMNS))),
                max_seq=max_seq.get((key, window)),
            )
        )
    return reports


def _previews(conn: Connection, table: sa.Table, wanted: sa.Table, dialect: rules.Dialect) -> dict[tuple[str, date], pd.DataFrame]:
    """The first PREVIEW_ROWS rows (by seq) of each wanted partition of `table`."""
    same_partition = (table.c.pattern_key == wanted.c.pattern_key) & (table.c.window_start == wanted.c.window_start)
    if dialect.pg and table is tables.feedback:
        # one index probe per partition instead of numbering every row
        first = sa.select(table).where(same_partition).order_by(table.c.execution_id).limit(PREVIEW_ROWS).lateral("first")
        query = sa.select(first).select_from(wanted.join(first, sa.true()))
    else:
        numbered = (
            sa.select(
                table,
                sa.func.row_number()
                .over(partition_by=[table.c.pattern_key, table.c.window_start], order_by=table.c.seq)
                .label("preview_row"),
            )
            .select_from(table.join(wanted, same_partition))
            .subquery()
        )
        query = sa.select(*(numbered.c[c.name] for c in table.columns)).where(numbered.c.preview_row <= PREVIEW_ROWS)
    rows = pd.DataFrame(conn.execute(query).mappings().all(), columns=[c.name for c in table.columns])
    if rows.empty:
        return {}
    rows["window_start"] = rows["window_start"].map(_as_date)
    return {
        (key, window): group.sort_values("seq").reset_index(drop=True)
        for (key, window), group in rows.groupby(["pattern_key", "window_start"], sort=False)
    }


def _accounting_rows(report: CollectionReport) -> list[dict]:
    now = datetime.now(UTC)
    return [
        {
            "pattern_key": p.pattern_key,
            "window_start": p.window_start,
            "pattern_id": p.pattern_id,
            "source_rows": p.source_rows,
            "valid_rows": p.valid_rows,
            "quarantined_rows": p.quarantined_rows,
            "max_seq": p.max_seq,
            "collected_at": now,
        }
        for p in report.partitions
    ]


def _as_date(value) -> date:
    return value if isinstance(value, date) and not isinstance(value, datetime) else date.fromisoformat(str(value)[:10])


def _read_source(
    source: Engine,
    columns: Sequence[str],
    pattern_ids: Sequence[str],
    pairs: Sequence[tuple[str, date]],
    chunk_rows: int,
) -> Iterator[pd.DataFrame]:
    """Stream the bounding box of the requested partitions, in seq order, as raw driver values
    (`read_frames`), so that a malformed value in a loosely typed source reaches the rules as a
    value instead of an exception that fails the partition."""
    with source.connect() as conn:
        query = source_rows_query(columns, pattern_ids, min(w for _, w in pairs), max(w for _, w in pairs))
        yield from read_frames(conn, query, list(columns), chunk_rows)


def first_uncollected_window(conn: Connection, pattern_id: str, first: date, window: date) -> date:
    """The oldest window of [first, window) not collected yet for the pattern (else `window`)."""
    fp = tables.feedback_partitions
    done = set(conn.scalars(sa.select(fp.c.window_start).where(fp.c.pattern_id == pattern_id, fp.c.window_start.between(first, window))))
    day = first
    while day < window and day in done:
        day += timedelta(days=1)
    return day
