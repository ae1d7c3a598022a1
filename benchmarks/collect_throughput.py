"""Throughput of feedback collection (issue 2), on SQLite and on PostgreSQL.

For each backend the script creates a scratch database (SQLite in a temporary folder; a fresh
PostgreSQL database, dropped at the end), simulates ``--rows`` executions for ``--patterns``
patterns over ``--days`` days into ``hook_executions`` (not timed), registers the patterns, then
times, each with the process's peak resident memory during the step:

1. ``plain copy``: a plain Python copy. The source's rows of the partitions streamed into
   Python (``read_frames``, COPY on PostgreSQL), only the two partition columns derived (pattern
   key, UTC day) and the timestamps typed, no normalisation, no validation, written with the
   project's bulk writer (``bulk_insert``, one streamed COPY on PostgreSQL) into a scratch table
   with the columns and primary key of ``feedback``.
2. ``in-database limit``: what the database itself does with the same checks: one ``INSERT ...
   SELECT`` of the valid rows (the collector's own rules, ``collector.checked_rows``) into a
   scratch table with the columns and primary key of ``feedback``; no quarantine, no accounting.
3. ``collect_feedback``: every (pattern, day) partition in one call, the code path of a range
   run of ``feedback_dataset``.
4. ``dagster range run``: one real run of ``feedback_dataset`` over the same partition range
   (``dagster.materialize`` with the range tags), to show what Dagster adds. It runs on the
   instance a deployment on that backend has (PostgreSQL's, as the repository's dagster.yaml, for
   PostgreSQL; SQLite's, as ``make demo``'s, for SQLite; made before the step is timed) and with
   the code location's event levers (defs/code_location/event_levers.py). The warehouse tables
   are emptied first (TRUNCATE on PostgreSQL, so the rows step 3 left are not dead index entries
   the run must step over), so it does the same work as step 3.

It prints rows/s, the ratio of each step's speed to the plain copy's, the Python process's CPU
seconds (the rest of the wall time is the database server, or waiting for it), and peak RSS.

Usage::

    python benchmarks/collect_throughput.py [--rows 1000000] [--backend sqlite|postgresql|both]

PostgreSQL: the admin URL comes from FEEDBACK_LOOP_TEST_POSTGRES_URL, else
postgresql+psycopg://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from feedback_loop_dagster.lib import settings  # noqa: E402
from feedback_loop_dagster.lib.collect import collector, rules, source  # noqa: E402
from feedback_loop_dagster.lib.settings import SOURCE_TABLE  # noqa: E402
from feedback_loop_dagster.lib.storage import tables  # noqa: E402
from feedback_loop_dagster.lib.storage.database import dispose_engine, get_engine  # noqa: E402
from feedback_loop_dagster.lib.storage.migrations import init_databases  # noqa: E402
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids  # noqa: E402
from feedback_loop_dagster.lib.storage.writes import bulk_insert  # noqa: E402
from feedback_loop_dagster.simulator import SimulationConfig, pattern_ids, simulate_to_database  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
END_DATE = date(2025, 3, 1)  # fixed, so every run simulates the same rows
PLAIN_COPY_TABLE = "feedback_plain_copy"
IN_DATABASE_TABLE = "feedback_in_database"


@dataclass
class Step:
    backend: str
    name: str
    rows: int
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")


# --- measuring ------------------------------------------------------------------------------


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    """VmHWM (peak RSS since the last reset); else ru_maxrss (peak since the process started)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def measured(result: dict):
    _reset_peak_rss()
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    result.update(
        seconds=time.perf_counter() - wall, cpu_seconds=time.process_time() - cpu, peak_rss_mib=_peak_rss_mib()
    )


# --- scratch databases ----------------------------------------------------------------------


@contextmanager
def scratch_database(backend: str):
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="fld_bench_")
        url = f"sqlite:///{folder}/warehouse.db"
        try:
            yield url
        finally:
            dispose_engine(url)
            shutil.rmtree(folder, ignore_errors=True)
        return
    admin_url = os.environ.get("FEEDBACK_LOOP_TEST_POSTGRES_URL") or DEFAULT_ADMIN_URL
    name = f"fld_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose_engine(url)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- the steps ------------------------------------------------------------------------------


def _scratch_feedback(engine, name: str, unlogged: bool = False) -> sa.Table:
    scratch = tables.feedback.to_metadata(sa.MetaData(), name=name)
    if unlogged:
        scratch._prefixes = ["UNLOGGED"]
    scratch.drop(engine, checkfirst=True)
    scratch.create(engine)
    return scratch


def plain_copy(engine, pairs: list[tuple[str, date]], keys_by_id: dict[str, str]) -> int:
    """Read the partitions' rows into Python and bulk-write them, nothing else."""
    scratch = _scratch_feedback(engine, PLAIN_COPY_TABLE)
    columns = source.source_columns(engine)
    wanted = [c.name for c in tables.feedback.columns]
    wanted_pairs = pd.DataFrame(pairs, columns=["pattern_key", "window_start"])

    def frames():
        for raw in collector._read_source(engine, columns, sorted(keys_by_id), pairs, collector.CHUNK_ROWS):
            frame = {c: raw[c] for c in wanted if c in raw.columns}
            for column in ("started_at", "completed_at"):
                frame[column] = pd.to_datetime(raw[column], utc=True, format="ISO8601")
            frame["pattern_key"] = raw["pattern_id"].map(keys_by_id)
            frame["window_start"] = collector.window_of(frame["started_at"])
            yield pd.DataFrame(frame)[wanted].merge(wanted_pairs)

    with engine.begin() as conn:
        written = bulk_insert(conn, scratch, frames())
    with engine.begin() as conn:
        scratch.drop(conn)
    return written


def in_database(engine, pairs: list[tuple[str, date]], keys_by_id: dict[str, str], unlogged: bool = False) -> int:
    """One INSERT ... SELECT of the valid rows, with the collector's checks, into a scratch table."""
    scratch = _scratch_feedback(engine, IN_DATABASE_TABLE, unlogged)
    ids_by_key = {k: p for p, k in keys_by_id.items()}
    dialect = rules.Dialect(engine.dialect.name)
    columns = source.source_columns(engine)
    with engine.begin() as conn:
        collector.prepare_transaction(conn, dialect)
        wanted = collector._requested(conn, pairs, ids_by_key)
        relation = sa.table(SOURCE_TABLE, *(sa.column(c) for c in columns))
        checked = collector.checked_rows(
            relation, columns, collector.source_kinds(engine, columns), wanted, dialect,
            settings.max_duration_ms(), source.unique_execution_ids(engine),
        )
        names = [c.name for c in scratch.columns]
        conn.execute(
            scratch.insert().from_select(names, sa.select(*(checked.c[c] for c in names)).where(checked.c.reason.is_(None)))
        )
    with engine.begin() as conn:
        written = conn.scalar(sa.select(sa.func.count()).select_from(scratch))
        scratch.drop(conn)
    return written


def empty_feedback_tables(engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("TRUNCATE feedback, feedback_quarantine, feedback_partitions")
            return
        for table in (tables.feedback, tables.feedback_quarantine, tables.feedback_partitions):
            conn.execute(table.delete())


@contextmanager
def range_run_instance(backend: str):
    """The Dagster instance a deployment on `backend` has: PostgreSQL's (the repository's
    dagster.yaml) for a PostgreSQL warehouse, SQLite's (`make demo`'s) for a SQLite one; with the
    code location's event levers, which every process that loads it sets."""
    import dagster as dg
    from loop_graph import postgres_instance

    from feedback_loop_dagster.defs.code_location.event_levers import apply_event_levers

    apply_event_levers()
    with (postgres_instance() if backend == "postgresql" else dg.instance_for_test()) as instance:
        yield instance


def dagster_range_run(url: str, keys: list[str], first: date, last: date, instance) -> int:
    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from feedback_loop_dagster.defs.code_location.partitions import partition_key, patterns_partitions
    from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
    from feedback_loop_dagster.defs.collect.assets import feedback_dataset, hook_executions

    instance.add_dynamic_partitions(patterns_partitions.name, keys)
    result = dg.materialize(
        [hook_executions, feedback_dataset],
        selection=[feedback_dataset],
        instance=instance,
        resources={"databases": FeedbackDatabases(database_url=url)},
        tags={
            ASSET_PARTITION_RANGE_START_TAG: str(partition_key(keys[0], first)),
            ASSET_PARTITION_RANGE_END_TAG: str(partition_key(keys[-1], last)),
        },
    )
    if not result.success:
        raise RuntimeError("the Dagster range run failed")
    materializations = result.asset_materializations_for_node("feedback_dataset")
    if len(materializations) != len(keys) * ((last - first).days + 1):
        raise RuntimeError(f"the range run materialised {len(materializations)} partitions")
    # each partition's materialization carries its own rows: the run's are their sum
    return sum(int(m.metadata["source_rows"].value) for m in materializations)


def run_backend(backend: str, args) -> list[Step]:
    per_day = math.ceil(args.rows / (args.patterns * args.days))
    config = SimulationConfig(patterns=args.patterns, days=args.days, per_day=per_day, seed=args.seed, end_date=END_DATE)
    days = config.window_dates()
    steps: list[Step] = []
    with scratch_database(backend) as url:
        engine = get_engine(url)
        init_databases(engine, engine)
        started = time.perf_counter()
        simulated = simulate_to_database(engine, config)
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")  # a table this size in production has statistics
        ids = pattern_ids(args.patterns, config.resolved().nasty_ids)
        keys_by_id = register_pattern_ids(engine, ids)
        keys = sorted(keys_by_id.values())
        pairs = [(k, d) for k in keys for d in days]
        print(
            f"[{backend}] simulated {simulated:,} executions ({args.patterns} patterns x {args.days} days, "
            f"{len(pairs)} partitions) in {time.perf_counter() - started:.0f} s (not timed)",
            flush=True,
        )

        def record(name: str, rows: int, measure: dict) -> None:
            steps.append(Step(backend, name, rows, **measure))
            s = steps[-1]
            print(f"[{backend}] {name}: {rows:,} rows in {s.seconds:.1f} s ({s.rows_per_second:,.0f} rows/s)", flush=True)

        measure: dict = {}
        with measured(measure):
            copied = plain_copy(engine, pairs, keys_by_id)
        record("plain copy", copied, measure)

        measure = {}
        with measured(measure):
            valid_in_database = in_database(engine, pairs, keys_by_id)
        record("in-database limit", copied, measure)

        measure = {}
        with measured(measure):
            report = collector.collect_feedback(engine, engine, pairs)
        record("collect_feedback", report.source_rows, measure)
        if report.source_rows != copied or report.valid_rows + report.quarantined_rows != report.source_rows:
            raise RuntimeError(f"collected {report.source_rows} rows, copied {copied}")
        if report.valid_rows != valid_in_database:
            raise RuntimeError(f"collect_feedback stored {report.valid_rows} valid rows, the in-database row {valid_in_database}")
        print(
            f"[{backend}]   {report.valid_rows:,} valid, {report.quarantined_rows:,} quarantined "
            f"({len(report.reasons)} reasons)",
            flush=True,
        )

        if not args.skip_dagster:
            empty_feedback_tables(engine)
            measure = {}
            with range_run_instance(backend) as instance, measured(measure):
                rows = dagster_range_run(url, keys, days[0], days[-1], instance)
            record("dagster range run", rows, measure)
    return steps


def print_table(steps: list[Step]) -> None:
    plain = {s.backend: s for s in steps if s.name == "plain copy"}
    header = f"{'backend':<11}{'step':<19}{'rows':>11}{'seconds':>9}{'rows/s':>10}{'vs plain':>9}{'py cpu s':>9}{'peak RSS':>10}"
    print()
    print(header)
    print("-" * len(header))
    for s in steps:
        ratio = s.rows_per_second / plain[s.backend].rows_per_second
        print(
            f"{s.backend:<11}{s.name:<19}{s.rows:>11,}{s.seconds:>9.1f}{s.rows_per_second:>10,.0f}{ratio:>9.2f}"
            f"{s.cpu_seconds:>9.1f}{s.peak_rss_mib:>7.0f} MiB"
        )
    limit = {s.backend: s for s in steps if s.name == "in-database limit"}
    for s in steps:
        if s.name == "collect_feedback" and s.backend in limit:
            share = s.rows_per_second / limit[s.backend].rows_per_second
            print(f"{s.backend}: collect_feedback runs at {share:.2f}x the in-database limit")
    print()
    print(
        f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
        "'vs plain' = rows/s relative to the plain copy on the same backend; 'py cpu s' = CPU seconds of "
        "this Python process (the rest of the wall time is the database server or waiting for it)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="executions to simulate (rounded up to whole days)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--patterns", type=int, default=50)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=20250301)
    parser.add_argument("--skip-dagster", action="store_true", help="leave out the Dagster range run")
    args = parser.parse_args()

    print(
        f"python {platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}, "
        f"sqlalchemy {sa.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    started = time.perf_counter()
    steps: list[Step] = []
    for backend in backends:
        steps += run_backend(backend, args)
    print_table(steps)
    print(f"total {time.perf_counter() - started:.0f} s, load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
