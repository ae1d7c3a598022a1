"""The ways to collect that issue 12 lists, measured on PostgreSQL before choosing one.

Simulates ``--rows`` executions into a scratch PostgreSQL database (not timed), then times, over
the same requested partitions (every pattern x day):

* ``INSERT ... SELECT`` without checks, with the collector's checks (``collector.checked_rows``),
  and with the checks into an unlogged table, each into a table with ``feedback``'s primary key;
* reads into Arrow with ADBC (``adbc-driver-postgresql``) and with connectorx;
* an ADBC read followed by ``adbc_ingest`` into a table with ``feedback``'s primary key;
* pandera's polars backend validating the Arrow frame (the model's column checks, lazily);
* ``collect_feedback`` itself.

Needs the optional dependencies: ``pip install -e ".[options-benchmark]"``. The figures in
DESIGN.md section 2 ("Collection speed") come from this script.

Usage::

    python benchmarks/collect_options.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sqlalchemy as sa  # noqa: E402
from collect_throughput import END_DATE, in_database, measured, scratch_database  # noqa: E402

from feedback_loop_dagster.lib.collect import collector  # noqa: E402
from feedback_loop_dagster.lib.collect.schema import EXECUTION_STATUSES, MAX_RETRY_COUNT  # noqa: E402
from feedback_loop_dagster.lib.settings import DEFAULT_MAX_DURATION_MS  # noqa: E402
from feedback_loop_dagster.lib.storage import tables  # noqa: E402
from feedback_loop_dagster.lib.storage.database import get_engine  # noqa: E402
from feedback_loop_dagster.lib.storage.migrations import init_databases  # noqa: E402
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids  # noqa: E402
from feedback_loop_dagster.simulator import SimulationConfig, pattern_ids, simulate_to_database  # noqa: E402

COLUMNS = [c.name for c in tables.hook_executions.columns]


def _libpq_url(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _box(days) -> str:
    return f"SELECT {', '.join(COLUMNS)} FROM hook_executions WHERE started_at >= '{days[0]}' AND started_at < '{days[-1]}'::date + 1"


def insert_select(engine, pairs, keys_by_id, checks: bool, unlogged: bool = False) -> int:
    if checks:
        return in_database(engine, pairs, keys_by_id, unlogged=unlogged)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS scratch; CREATE TABLE scratch (LIKE feedback INCLUDING ALL)")
    with engine.begin() as conn:
        written = conn.exec_driver_sql(
            "INSERT INTO scratch SELECT p.partition_key, (s.started_at AT TIME ZONE 'UTC')::date, s.execution_id, s.seq, "
            "s.pattern_id, s.pattern_version, s.started_at, s.completed_at, s.duration_ms, s.status, s.quality_score, "
            "s.performance_score, s.user_rating, s.retry_count, s.error_type, s.error_message, s.unit_id "
            f"FROM ({_box(sorted({d for _, d in pairs}))}) s JOIN patterns p USING (pattern_id)"
        ).rowcount
        conn.exec_driver_sql("DROP TABLE scratch")
    return written


def arrow_read(url: str, days, driver: str):
    if driver == "connectorx":
        import connectorx as cx

        return cx.read_sql(_libpq_url(url), _box(days), return_type="arrow")
    import adbc_driver_postgresql.dbapi as adbc

    with adbc.connect(_libpq_url(url)) as conn, conn.cursor() as cursor:
        cursor.execute(_box(days))
        return cursor.fetch_arrow_table()


def adbc_read_and_ingest(engine, url: str, days, keys_by_id) -> int:
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow as pa
    import pyarrow.compute as pc

    table = arrow_read(url, days, "adbc")
    keys = pa.array([keys_by_id[p] for p in table["pattern_id"].to_pylist()])
    day = pc.cast(pc.cast(table["started_at"], pa.timestamp("us", "UTC")), pa.date32())
    table = table.drop_columns(["quality_results"]).append_column("pattern_key", keys).append_column("window_start", day)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS scratch; CREATE TABLE scratch (LIKE feedback INCLUDING ALL)")
    with adbc.connect(_libpq_url(url)) as conn, conn.cursor() as cursor:
        written = cursor.adbc_ingest("scratch", table, mode="append")
        conn.commit()
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE scratch")
    return written


def pandera_polars(url: str, days) -> str:
    import pandera.polars as pap
    import polars as pl

    frame = pl.from_arrow(arrow_read(url, days, "adbc"))
    between = lambda low, high: [pap.Check.ge(low), pap.Check.le(high)]  # noqa: E731
    schema = pap.DataFrameSchema(
        {
            "execution_id": pap.Column(str, pap.Check.str_length(1)),
            "status": pap.Column(str, pap.Check.isin(EXECUTION_STATUSES), nullable=True),
            "duration_ms": pap.Column(float, between(0, DEFAULT_MAX_DURATION_MS), nullable=True),
            "quality_score": pap.Column(float, between(0, 1), nullable=True),
            "performance_score": pap.Column(float, between(0, 1), nullable=True),
            "user_rating": pap.Column(float, between(0, 5), nullable=True),
            "retry_count": pap.Column(pl.Int32, between(0, MAX_RETRY_COUNT), nullable=True),
        }
    )
    started = time.perf_counter()
    try:
        schema.validate(frame, lazy=True)
        failures = 0
    except pap.errors.SchemaErrors as exc:
        failures = len(exc.failure_cases)
    return f"validation alone {time.perf_counter() - started:.2f} s, {failures:,} failure cases"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--patterns", type=int, default=50)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    config = SimulationConfig(
        patterns=args.patterns, days=args.days, per_day=math.ceil(args.rows / (args.patterns * args.days)), seed=20250301, end_date=END_DATE
    )
    days = config.window_dates()
    with scratch_database("postgresql") as url:
        engine = get_engine(url)
        init_databases(engine, engine)
        simulate_to_database(engine, config)
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        keys_by_id = register_pattern_ids(engine, pattern_ids(args.patterns, config.resolved().nasty_ids))
        pairs = [(k, d) for k in sorted(keys_by_id.values()) for d in days]
        steps = [
            ("INSERT ... SELECT, no checks", lambda: insert_select(engine, pairs, keys_by_id, checks=False)),
            ("INSERT ... SELECT, the collector's checks", lambda: insert_select(engine, pairs, keys_by_id, checks=True)),
            ("  the same, unlogged table", lambda: insert_select(engine, pairs, keys_by_id, checks=True, unlogged=True)),
            ("ADBC read into Arrow", lambda: arrow_read(url, days, "adbc").num_rows),
            ("connectorx read into Arrow", lambda: arrow_read(url, days, "connectorx").num_rows),
            ("ADBC read + adbc_ingest", lambda: adbc_read_and_ingest(engine, url, days, keys_by_id)),
            ("ADBC read + pandera polars", lambda: pandera_polars(url, days)),
            ("collect_feedback", lambda: collector.collect_feedback(engine, engine, pairs).source_rows),
        ]
        print(f"\n{'way':<44}{'seconds':>9}{'py cpu s':>9}{'peak RSS':>10}  result")
        for name, run in steps:
            measure: dict = {}
            with measured(measure):
                result = run()
            figures = f"{measure['seconds']:>9.2f}{measure['cpu_seconds']:>9.1f}{measure['peak_rss_mib']:>6.0f} MiB"
            print(f"{name:<44}{figures}  {result}", flush=True)
    print(f"\nload average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
