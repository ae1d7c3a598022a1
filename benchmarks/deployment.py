"""Deployment benchmark on PostgreSQL, with a real dagster-daemon and dagster-webserver (not a test).

Prints, side by side:
  (a) a backfill of P patterns x D days (default 100 x 30) with our policy (range runs over blocks of
      patterns, submitted through the webserver and run by the daemon) against one run per partition
      (N single-partition runs measured, default 30, and extrapolated to P x D: said so in the output);
      optionally also Dagster's own UI backfill of the same set (--ui-backfill);
  (b) sensor reaction time: rows inserted -> their A/B result updated, at the daemon's sensor interval
      (default 30 s, printed);
  (c) peak memory (max RSS) of a backfill run over M executions (default 10,000,000);
  (d) what a run launched by the CLI costs, one partition of the whole graph, three ways: Dagster's
      `execute_in_process` (the baseline: no code location origin, compute logs mirrored through
      `tail -F`), our in-process launch linked to the code location (defs/runs.py), and a launch
      through the workspace (submitted to the webserver, run by the daemon's code server).
Aims (the issue's): (a) at least 50x faster, (b) under 60 s at a 30 s interval, (c) under 2 GiB.

    .venv/bin/python benchmarks/deployment.py                       # full sizes
    .venv/bin/python benchmarks/deployment.py --memory-executions 1000000 --skip b

PostgreSQL from FEEDBACK_LOOP_TEST_POSTGRES_URL (admin URL; default postgres@127.0.0.1:5432). Every
database it makes is dropped at the end; every process it starts is stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")  # Dagster's beta/preview notices would bury the report

import dagster as dg  # noqa: E402
import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from dagster._core.execution.backfill import BulkActionStatus  # noqa: E402
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG  # noqa: E402

from feedback_loop_dagster.definitions import defs  # noqa: E402
from feedback_loop_dagster.defs.jobs import PATTERN_TAG  # noqa: E402
from feedback_loop_dagster.defs.partitions import patterns_partitions  # noqa: E402
from feedback_loop_dagster.defs.resources import FeedbackDatabases  # noqa: E402
from feedback_loop_dagster.defs.runs import (  # noqa: E402
    add_pattern_partitions,
    launch_in_process,
    materialize_windows,
    range_run_requests,
    range_run_tags,
)
from feedback_loop_dagster.lib.storage import tables  # noqa: E402
from feedback_loop_dagster.lib.storage.database import get_engine  # noqa: E402
from feedback_loop_dagster.lib.storage.migrations import init_databases  # noqa: E402
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids  # noqa: E402
from feedback_loop_dagster_tests.integration.data import (  # noqa: E402
    assigned_executions,
    executions,
    experiment_history,
    generate_executions,
    insert,
    loop_asset_keys,
)
from feedback_loop_dagster_tests.integration.harness import (  # noqa: E402
    Deployment,
    create_database,
    drop_database,
)

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def wait_runs(d: Deployment, run_ids: list[str], timeout: float) -> float:
    """Waits until every run finished; returns when the last one did (epoch seconds)."""
    def done():
        records = [d.instance.get_run_record_by_id(r) for r in run_ids]
        return all(r.dagster_run.status in FINISHED for r in records) and records

    records = d.wait_until(done, ceiling=timeout, what=f"{len(run_ids)} run(s)", interval=2)
    failed = [r.dagster_run.run_id for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
    if failed:
        raise SystemExit(f"run(s) failed: {failed}\n{d.log_tail()}")
    return max(r.end_time for r in records)


# --- (a) -------------------------------------------------------------------------------------


def bench_backfill(d: Deployment, patterns: int, days: int, per_day: int, single_runs: int, ui_backfill: bool) -> dict:
    engine = get_engine(d.warehouse_url)
    ids = [f"bf-{i:04d}" for i in range(patterns)]
    last = datetime.now(UTC).date() - timedelta(days=2)
    first = last - timedelta(days=days - 1)
    log(f"(a) writing {patterns} patterns x {days} days x {per_day} executions")
    generate_executions(engine, ids, first, days, per_day, tag="bf")
    keys_by_id = register_pattern_ids(engine, ids)
    keys = [keys_by_id[i] for i in ids]
    add_pattern_partitions(d.instance, keys)
    order = d.instance.get_dynamic_partitions(patterns_partitions.name)
    keys = [k for k in order if k in set(keys)]
    client = d.client()
    result = {"patterns": patterns, "days": days, "partitions": patterns * days, "rows": patterns * days * per_day}

    # One run per partition: N single-partition runs of different patterns (the queue may run them
    # side by side, up to its global limit), then extrapolated linearly.
    # Newest window first, every pattern of a window before the next window: as many different
    # patterns side by side as the queue allows (one run per pattern at a time).
    sample = [(key, last - timedelta(days=back)) for back in range(days) for key in keys][:single_runs]
    log(f"(a) {len(sample)} single-partition runs")
    started = time.time()
    run_ids = [
        client.submit_job_execution("feedback_loop_job", tags={PARTITION_NAME_TAG: f"{key}|{window}", PATTERN_TAG: key})
        for key, window in sample
    ]
    single_runs = len(sample)
    measured = wait_runs(d, run_ids, timeout=3600) - started
    result["single_runs"] = single_runs
    result["single_seconds"] = measured
    result["per_partition_extrapolated"] = measured / single_runs * patterns * days

    log("(a) range runs over the whole set (our policy)")
    started = time.time()
    requests = range_run_requests(keys, first, last)
    run_ids = [client.submit_job_execution("feedback_loop_job", tags=r.tags) for r in requests]
    result["range_runs"] = len(run_ids)
    result["range_seconds"] = wait_runs(d, run_ids, timeout=3600) - started

    if ui_backfill:
        log("(a) Dagster's UI backfill of the same set (single_run policy, split by Dagster)")
        names = [f"{k}|{first + timedelta(days=i)}" for k in keys for i in range(days)]
        started = time.time()
        backfill_id = d.launch_backfill(names, sorted(loop_asset_keys(defs)), title="benchmark")

        def finished():
            backfill = d.instance.get_backfill(backfill_id)
            return backfill.status if backfill.status != BulkActionStatus.REQUESTED else None

        status = d.wait_until(finished, ceiling=7200, what="the UI backfill", interval=5)
        runs = d.instance.get_run_records(dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))
        result["ui_status"] = status.value
        result["ui_runs"] = len(runs)
        result["ui_seconds"] = max(r.end_time for r in runs) - started
    return result


# --- (b) -------------------------------------------------------------------------------------


def bench_reaction(d: Deployment, trials: int, rows: int, interval: int) -> dict:
    engine = get_engine(d.warehouse_url)
    pattern = "bench-reaction"
    today = datetime.now(UTC).date()
    local = dg.Definitions(
        assets=defs.assets, jobs=defs.jobs, executor=dg.in_process_executor,
        resources={"databases": FeedbackDatabases(database_url=d.warehouse_url)},
    )
    add_pattern_partitions(d.instance, [pattern])
    log("(b) two days of history so the pattern has a running A/B experiment")
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    for day in experiment_history(engine, pattern, today - timedelta(days=3), 2, per_day=600):
        materialize_windows(local, d.instance, [pattern], day, day, run_config=quiet)
    with engine.connect() as conn:
        experiment_id = conn.execute(
            sa.select(tables.experiments.c.id).where(
                tables.experiments.c.pattern_id == pattern, tables.experiments.c.status == "running"
            )
        ).scalar()
        max_seq = conn.execute(sa.select(sa.func.max(tables.hook_executions.c.seq))).scalar() or 0
    if experiment_id is None:
        raise SystemExit("(b) no running experiment after the history: cannot measure A/B reaction")
    # The sensor starts after the history (its rows are done): cursor at the newest row.
    d.graphql(
        "mutation($s: SensorSelector!, $c: String) { setSensorCursor(sensorSelector: $s, cursor: $c) { __typename } }",
        {"s": d.selector("new_executions_sensor"), "c": json.dumps({"high_water": max_seq, "gaps": []})},
    )
    d.start_sensor("new_executions_sensor")
    rng = np.random.default_rng(7)
    reactions = []
    ab = tables.ab_results
    for trial in range(trials):
        frame = assigned_executions(engine, pattern, today, rows, rng, tag=f"reaction{trial}")
        insert(engine, frame)
        inserted = datetime.now(UTC)

        def updated():
            with engine.connect() as conn:
                at = conn.execute(
                    sa.select(ab.c.computed_at).where(ab.c.experiment_id == experiment_id, ab.c.window_start == today)
                ).scalar()
            if at is not None and at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            return at if at is not None and at > inserted else None

        at = d.wait_until(updated, ceiling=600, what="the A/B result to be updated", interval=0.5)
        reactions.append((at - inserted).total_seconds())
        log(f"(b) trial {trial + 1}: {reactions[-1]:.1f} s")
        time.sleep(interval * 0.37)  # start the next trial at a different phase of the tick
    d.stop_sensor("new_executions_sensor")
    return {"interval": interval, "rows": rows, "reactions": reactions}


# --- (c) -------------------------------------------------------------------------------------

MEMORY_RUNNER = r"""
import json, resource, sys, time
from datetime import date
import dagster as dg
from feedback_loop_dagster.defs.resources import FeedbackDatabases
from feedback_loop_dagster.defs.runs import launch_in_process, range_run_requests
from feedback_loop_dagster.definitions import defs
args = json.loads(sys.argv[1])
local = dg.Definitions(assets=defs.assets, jobs=defs.jobs, executor=dg.in_process_executor,
                       resources={"databases": FeedbackDatabases(database_url=args["url"])})
job = local.resolve_job_def("feedback_loop_job")
quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
first, last = date.fromisoformat(args["first"]), date.fromisoformat(args["last"])
started = time.time()
runs = 0
with dg.DagsterInstance.get() as instance:
    step = args["days_per_run"]
    day = first
    while day <= last:
        end = min(last, date.fromordinal(day.toordinal() + step - 1))
        for request in range_run_requests(args["keys"], day, end):
            result = launch_in_process(job, instance, request.tags, run_config=quiet)
            assert result.success
            runs += 1
        day = date.fromordinal(end.toordinal() + 1)
print(json.dumps({"seconds": time.time() - started, "runs": runs,
                  "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def bench_memory(d: Deployment, admin_url: str, executions: int, patterns: int, days: int, days_per_run: int | None) -> dict:
    # The loop's later stages cost about the same per partition whatever its size, so the volume
    # sits in few, large partitions (default 10 patterns x 20 days x 50,000 executions a day).
    per_day = max(1, executions // (patterns * days))
    executions = patterns * per_day * days
    url = create_database(admin_url, "fld_bench_memory")
    try:
        engine = get_engine(url)
        init_databases(engine, engine)
        ids = [f"mem-{i:04d}" for i in range(patterns)]
        first = date(2025, 6, 1)
        last = first + timedelta(days=days - 1)
        log(f"(c) writing {executions:,} executions ({patterns} patterns x {days} days x {per_day})")
        started = time.time()
        for start in range(days):  # a day per statement keeps each transaction modest
            generate_executions(engine, ids, first + timedelta(days=start), 1, per_day, tag=f"m{start}")
        written = time.time() - started
        with engine.begin() as conn:
            conn.execute(sa.text('ANALYZE "hook_executions"'))
        keys = register_pattern_ids(engine, ids)
        key_list = sorted(keys.values())
        add_pattern_partitions(d.instance, key_list)
        order = [k for k in d.instance.get_dynamic_partitions(patterns_partitions.name) if k in set(key_list)]
        step = days_per_run or days
        log(f"(c) backfill: range runs of {len(order)} patterns x {step} day(s), in a child process")
        args = {"url": url, "keys": order, "first": first.isoformat(), "last": last.isoformat(), "days_per_run": step}
        child = subprocess.run(
            [sys.executable, "-c", MEMORY_RUNNER, json.dumps(args)],
            cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True, timeout=6 * 3600,
        )
        if child.returncode != 0:
            raise SystemExit(f"(c) backfill failed:\n{child.stdout[-3000:]}\n{child.stderr[-5000:]}")
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        with engine.connect() as conn:
            collected = conn.execute(sa.select(sa.func.sum(tables.feedback_partitions.c.source_rows))).scalar()
        return {"executions": executions, "collected": int(collected or 0), "write_seconds": written,
                "patterns": patterns, "days": days,
                "days_per_run": step, **measured}
    finally:
        drop_database(admin_url, url)


# --- (d) -------------------------------------------------------------------------------------


def bench_launch(d: Deployment, rounds: int) -> dict:
    """Seconds per one-partition run of the whole graph, by launch path (median over `rounds`,
    the three paths interleaved so the machine's load weighs on each alike)."""
    engine = get_engine(d.warehouse_url)
    pattern = "bench-launch"
    day = datetime.now(UTC).date() - timedelta(days=2)
    insert(engine, executions(pattern, day, 200, tag="launch"))
    register_pattern_ids(engine, [pattern])
    add_pattern_partitions(d.instance, [pattern])
    local = dg.Definitions(
        assets=defs.assets, jobs=defs.jobs, executor=dg.in_process_executor,
        resources={"databases": FeedbackDatabases(database_url=d.warehouse_url)},
    )
    job = local.resolve_job_def("feedback_loop_job")
    tags = range_run_tags([pattern], day, day)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    client = d.client()

    def baseline():
        assert job.execute_in_process(instance=d.instance, tags=tags, run_config=quiet).success

    def linked():
        assert launch_in_process(job, d.instance, tags, run_config=quiet).success

    def workspace():
        run_id = client.submit_job_execution("feedback_loop_job", tags=tags)
        wait_runs(d, [run_id], timeout=3600)

    paths = {"execute_in_process": baseline, "linked in-process": linked, "through the workspace": workspace}
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    log(f"(d) {rounds} round(s) of one-partition runs, three launch paths (plus a warm-up round)")
    for round_ in range(rounds + 1):
        for name, launch in paths.items():
            started = time.perf_counter()
            launch()
            if round_:  # the first round warms imports and caches up
                seconds[name].append(time.perf_counter() - started)
    return {"rounds": rounds, "medians": {name: statistics.median(v) for name, v in seconds.items()}}


# --- report ----------------------------------------------------------------------------------


def report(a: dict | None, b: dict | None, c: dict | None, e: dict | None = None) -> None:
    print("\n" + "=" * 100)
    print("Deployment benchmark on PostgreSQL (dagster-daemon + dagster-webserver, repository dagster.yaml)")
    print(f"machine: {os.cpu_count()} CPUs; Dagster {dg.__version__}")
    print("=" * 100)
    if a:
        per = a["single_seconds"] / a["single_runs"]
        speedup = a["per_partition_extrapolated"] / a["range_seconds"]
        print(f"(a) backfill {a['patterns']} patterns x {a['days']} days = {a['partitions']:,} partitions "
              f"({a['rows']:,} executions)")
        print(f"    one run per partition : {a['single_runs']} single-partition runs measured in {a['single_seconds']:.0f} s "
              f"= {per:.1f} s/partition; EXTRAPOLATED to {a['partitions']:,}: {a['per_partition_extrapolated']:,.0f} s")
        print(f"    our policy (range runs): {a['range_runs']} run(s), {a['range_seconds']:.0f} s measured "
              f"-> {speedup:,.0f}x faster  [aim >= 50x: {'met' if speedup >= 50 else 'NOT met'}]")
        if "ui_runs" in a:
            ui = a["per_partition_extrapolated"] / a["ui_seconds"]
            print(f"    Dagster UI backfill   : {a['ui_runs']} runs (single_run policy, split per day by Dagster), "
                  f"{a['ui_seconds']:.0f} s measured, {a['ui_status']} -> {ui:,.0f}x faster")
    if b:
        r = b["reactions"]
        print(f"(b) sensor reaction, rows inserted -> A/B result updated; sensor interval {b['interval']} s, "
              f"{b['rows']} rows per trial")
        print(f"    trials: {', '.join(f'{x:.1f}' for x in r)} s; median {statistics.median(r):.1f} s, max {max(r):.1f} s "
              f"[aim < 60 s: {'met' if max(r) < 60 else 'NOT met'}]")
    if c:
        gib = c["max_rss_kib"] / 1024 / 1024
        print(f"(c) backfill over {c['executions']:,} executions ({c['collected']:,} collected; {c['patterns']} patterns x "
              f"{c['days']} days) in {c['runs']} range run(s) of {c['days_per_run']} day(s): {c['seconds']:.0f} s")
        print(f"    peak memory (max RSS of the run process) {gib:.2f} GiB [aim < 2 GiB: {'met' if gib < 2 else 'NOT met'}]; "
              f"data written by PostgreSQL generate_series in {c['write_seconds']:.0f} s")
    if e:
        base = e["medians"]["execute_in_process"]
        print(f"(d) one-partition run of the whole graph by launch path, median of {e['rounds']} (machine shared: under load)")
        for name, value in e["medians"].items():
            print(f"    {name:<22}: {value:6.2f} s  {value / base:5.2f}x")
    print("=" * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patterns", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--per-day", type=int, default=50, help="executions per pattern and day in (a)")
    parser.add_argument("--single-runs", type=int, default=30)
    parser.add_argument("--ui-backfill", action="store_true", help="(a) also Dagster's own UI backfill (slow)")
    parser.add_argument("--sensor-interval", type=int, default=30)
    parser.add_argument("--reaction-trials", type=int, default=3)
    parser.add_argument("--reaction-rows", type=int, default=200)
    parser.add_argument("--memory-executions", type=int, default=10_000_000)
    parser.add_argument("--memory-patterns", type=int, default=10)
    parser.add_argument("--memory-days", type=int, default=20)
    parser.add_argument("--memory-days-per-run", type=int, default=None, help="(c) windows per range run [all]")
    parser.add_argument("--launch-rounds", type=int, default=5, help="(d) rounds of the three launch paths")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: a,b,c,d")
    options = parser.parse_args()
    skip = set(filter(None, options.skip.split(",")))
    admin_url = os.environ.get("FEEDBACK_LOOP_TEST_POSTGRES_URL") or DEFAULT_ADMIN_URL

    a = b = c = e = None
    with Deployment(Path(tempfile.mkdtemp(prefix="fld-bench-")), admin_url,
                    sensor_interval_seconds=options.sensor_interval) as d:
        d.start_daemon()
        d.start_webserver()
        log(f"deployment up: {d.url}, logs in {d.logs}")
        if "b" not in skip:
            b = bench_reaction(d, options.reaction_trials, options.reaction_rows, options.sensor_interval)
        if "a" not in skip:
            a = bench_backfill(d, options.patterns, options.days, options.per_day, options.single_runs, options.ui_backfill)
        if "d" not in skip:
            e = bench_launch(d, options.launch_rounds)
        if "c" not in skip:
            d.stop("daemon")  # (c) measures one process; nothing else should compete for the CPUs
            c = bench_memory(d, admin_url, options.memory_executions, options.memory_patterns, options.memory_days,
                             options.memory_days_per_run)
    report(a, b, c, e)


if __name__ == "__main__":
    main()
