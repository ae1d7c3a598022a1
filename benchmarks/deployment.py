"""Deployment benchmark on PostgreSQL, with a real dagster-daemon and dagster-webserver (not a test).

Over a simulated history of P patterns x D days ending yesterday (feedback_loop_dagster.simulator,
realistic profiles, 2% malformed rows; default 200 x 14 x 20 executions a day), it prints:
  (e) `feedback-loop patterns sync` of the P new patterns: seconds and peak RSS of its process,
      against the SELECT DISTINCT it cannot avoid and the CLI's start;
  (f) one sensor tick with new rows in all P patterns, evaluated in its own process as the code
      server does: seconds and peak RSS, against reading the new rows;
  (a) a backfill of P x D with our policy (`range_run_requests`: blocks of up to 500 patterns, at
      most 1,000 partitions a run, submitted through the webserver and run by the daemon; measured
      over the first --backfill-days days and EXTRAPOLATED to D, said so in the output) against one
      run per partition (N single-partition runs measured, EXTRAPOLATED to P x D); optionally
      Dagster's own UI backfill (--ui-backfill);
  (g) the daily schedule's runs for one day (yesterday, every pattern), through the daemon's queue;
  (i) scale-out: range runs over disjoint blocks of --block-patterns x --block-days (default 50 x 7),
      two one after the other (one worker) against two at once (the QueuedRunCoordinator runs both:
      `feedback_loop/batch` allows two): the throughput ratio, and seconds per partition of a 50 x 7
      range run;
  (h) the load time of feedback_dataset's partitions page (P x D+1 partitions) in headless Chromium,
      against the asset catalog page;
  (b) sensor reaction time: rows inserted -> their A/B result updated, at the daemon's sensor interval;
  (d) one partition of the whole graph, three launch paths (execute_in_process, our linked
      in-process launch, through the workspace);
  (c) peak memory (max RSS) of a backfill run over M executions (default 1,000,000) in its own database.
Peak memory of the daemon-run parts is the largest RSS one process of the deployment reached (run
workers, code servers, daemon, webserver), sampled every 0.5 s. Each part prints its figures as it
ends, with the load average; the table at the end repeats them.
Aims (the issue's): (a) at least 50x faster than one run per partition; (i) a 50 x 7 range run under
0.1 s per partition; (d) one partition through the whole graph under 1 s; (b) under 60 s at a 30 s
interval; (c) under 2 GiB.

    .venv/bin/python benchmarks/deployment.py        # default sizes (not timed on a quiet machine; estimate 15-25 min)
    .venv/bin/python benchmarks/deployment.py --patterns 1000 --days 90 --per-day 50 \
        --backfill-days 1 --skip b,c,d               # 1,000 patterns x 90 days (4.5 M executions)
    .venv/bin/python benchmarks/deployment.py --skip a,e,f,g,h,i   # only (b), (c), (d)

PostgreSQL from FEEDBACK_LOOP_TEST_POSTGRES_URL (admin URL; default postgres@127.0.0.1:5432). Every
database it makes is dropped at the end; every process it starts is stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")  # Dagster's beta/preview notices would bury the report


def history(days: int) -> tuple[date, date]:
    """The simulated history: `days` UTC days ending yesterday, the latest complete window."""
    last = datetime.now(UTC).date() - timedelta(days=1)
    return last - timedelta(days=days - 1), last


# The daily windows start with the simulated history. The code location reads the start date when it
# loads (here, at the imports below, and in the deployment's processes), so it is set first.
_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--days", type=int, default=14)
os.environ["FEEDBACK_LOOP_START_DATE"] = history(_pre.parse_known_args()[0].days)[0].isoformat()

import dagster as dg  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from dagster._core.execution.backfill import BulkActionStatus  # noqa: E402
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG  # noqa: E402

from feedback_loop_dagster.definitions import build_definitions  # noqa: E402
from feedback_loop_dagster.defs.code_location.jobs import PATTERN_TAG  # noqa: E402
from feedback_loop_dagster.defs.code_location.partitions import patterns_partitions  # noqa: E402
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases  # noqa: E402
from feedback_loop_dagster.defs.code_location.schedules import daily_loop_schedule  # noqa: E402
from feedback_loop_dagster.defs.in_process_runs.runs import (  # noqa: E402
    add_pattern_partitions,
    launch_in_process,
    materialize_windows,
    quiet_run_config,
    range_run_requests,
    range_run_tags,
)
from feedback_loop_dagster.lib.storage import tables  # noqa: E402
from feedback_loop_dagster.lib.storage.database import get_engine  # noqa: E402
from feedback_loop_dagster.lib.storage.migrations import init_databases  # noqa: E402
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids  # noqa: E402
from feedback_loop_dagster.simulator import SimulationConfig, simulate_to_database  # noqa: E402
from feedback_loop_dagster_tests.integration.data import (  # noqa: E402
    assigned_executions,
    executions,
    experiment_history,
    generate_executions,
    insert,
    loop_asset_keys,
)
from feedback_loop_dagster_tests.integration.harness import (  # noqa: E402
    BIN,
    Deployment,
    create_database,
    drop_database,
    process_tree,
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

    # A long step of a big range run writes no event for minutes: only the ceiling applies.
    records = d.wait_until(done, stall=None, ceiling=timeout, what=f"{len(run_ids)} run(s)", interval=2)
    failed = [r.dagster_run.run_id for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
    if failed:
        raise SystemExit(f"run(s) failed: {failed}\n{d.log_tail()}")
    return max(r.end_time for r in records)


# --- the simulated history of (a) and (e)-(i) ----------------------------------------------


def write_history(d: Deployment, patterns: int, days: int, per_day: int) -> dict:
    """patterns x days x per_day executions from the simulator (realistic profiles, 2% malformed
    rows), ending yesterday, into the deployment's source table."""
    engine = get_engine(d.warehouse_url)
    config = SimulationConfig(patterns=patterns, days=days, per_day=per_day, seed=1, end_date=history(days)[1] + timedelta(days=1))
    log(f"writing {config.total_rows:,} simulated executions: {patterns} patterns x {days} days x {per_day}")
    started = time.perf_counter()
    written = simulate_to_database(engine, config, create_table=False)
    seconds = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(sa.text(f'ANALYZE "{tables.hook_executions.name}"'))
    return {"rows": written, "seconds": seconds}


class PeakMemory:
    """The largest RSS one process of the deployment (daemon, webserver, code servers, run
    workers) reaches while the block runs, sampled every `interval` s; and the CPU seconds those
    processes used meanwhile (`cpu`, PostgreSQL's aside), which a loaded machine inflates far less
    than wall time."""

    def __init__(self, d: Deployment, interval: float = 0.5):
        self.d, self.interval, self.peak, self.name = d, interval, 0, ""
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @property
    def cpu(self) -> float:
        return sum(self._cpu_last[pid] - self._cpu_first[pid] for pid in self._cpu_last)

    def _sample(self) -> None:
        first_pass = True
        while not self._stop.is_set():
            for proc in list(self.d.processes.values()):
                for p in process_tree(proc.pid):
                    try:
                        rss = p.memory_info().rss
                        times = p.cpu_times()
                        if rss > self.peak:
                            self.peak, self.name = rss, " ".join(p.cmdline())[-70:]
                    except psutil.Error:
                        continue
                    # processes already running count from now on, new ones (run workers) from their start
                    self._cpu_first.setdefault(p.pid, times.user + times.system if first_pass else 0.0)
                    self._cpu_last[p.pid] = times.user + times.system
            first_pass = False
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(args: list[str], what: str) -> tuple[float, int, str]:
    """Runs a child process to its end: (wall seconds, its peak RSS in bytes, its stdout)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"}, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # its own rusage, not the maximum over all children
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{what} failed ({proc.returncode}):\n{out.read()[-3000:]}\n{err.read()[-5000:]}")
        return seconds, usage.ru_maxrss * 1024, out.read()


def submit_and_wait(d: Deployment, requests: list[dg.RunRequest]) -> tuple[float, list]:
    """Submits the runs through the webserver (the daemon's queue runs them); returns the seconds
    from submission to the last run's end, and the run records."""
    client = d.client()
    started = time.time()
    run_ids = [client.submit_job_execution("feedback_loop_job", tags=r.tags) for r in requests]
    wait_runs(d, run_ids, timeout=6 * 3600)
    records = [d.instance.get_run_record_by_id(r) for r in run_ids]
    return max(r.end_time for r in records) - started, records


def step_seconds(d: Deployment, run_id: str) -> dict[str, float]:
    """Seconds each step (asset) of a run took, from its event log: where a range run's time goes."""
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    types = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    for record in d.instance.all_logs(run_id, of_type=types):
        event = record.dagster_event
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.step_key in started:
            seconds[event.step_key] = record.timestamp - started[event.step_key]
    return seconds


def steps_line(seconds: dict[str, float]) -> str:
    return ", ".join(f"{step} {value:.0f} s" for step, value in seconds.items())


def pattern_order(d: Deployment) -> list[str]:
    return d.instance.get_dynamic_partitions(patterns_partitions.name)


# --- (e) patterns sync ------------------------------------------------------------------------


def bench_sync(d: Deployment) -> dict:
    """`feedback-loop patterns sync` registering every simulated pattern, in its own process,
    against the SELECT DISTINCT it cannot avoid."""
    engine = get_engine(d.warehouse_url)
    started = time.perf_counter()
    with engine.connect() as conn:
        distinct = conn.scalars(sa.text(f'SELECT DISTINCT pattern_id FROM "{tables.hook_executions.name}"')).all()
    query_seconds = time.perf_counter() - started
    log(f"(e) feedback-loop patterns sync of {len(distinct)} new patterns")
    seconds, rss, _ = run_measured([str(BIN / "feedback-loop"), "patterns", "sync"], "patterns sync")
    start_seconds, _, _ = run_measured([str(BIN / "feedback-loop"), "patterns", "--help"], "feedback-loop --help")
    return {"patterns": len(pattern_order(d)), "seconds": seconds, "rss": rss,
            "query_seconds": query_seconds, "start_seconds": start_seconds}


# --- (f) a sensor tick ------------------------------------------------------------------------

SENSOR_TICK = r"""
import json, resource, sys, time
import dagster as dg
from feedback_loop_dagster.defs.collect.sensors import new_executions_sensor
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
args = json.loads(sys.argv[1])
with dg.DagsterInstance.get() as instance:
    context = dg.build_sensor_context(instance=instance, cursor=args["cursor"],
                                      resources={"databases": FeedbackDatabases(database_url=args["url"])})
    started = time.perf_counter()
    result = new_executions_sensor(context)
    seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "runs": len(result.run_requests or []),
                  "partitions_per_run": [r.tags.get("dagster/asset_partition_range_end") for r in result.run_requests or []]}))
"""


def bench_sensor_tick(d: Deployment, patterns: int, per_pattern: int) -> dict:
    """One evaluation of new_executions_sensor (in its own process, as the daemon's code server
    evaluates it) after `per_pattern` new rows landed in each of the patterns, yesterday."""
    engine = get_engine(d.warehouse_url)
    with engine.connect() as conn:
        high_water = conn.execute(sa.select(sa.func.max(tables.hook_executions.c.seq))).scalar() or 0
    last = history(1)[1]
    config = SimulationConfig(patterns=patterns, days=1, per_day=per_pattern, seed=2, end_date=last + timedelta(days=1))
    simulate_to_database(engine, config, create_table=False)
    started = time.perf_counter()
    with engine.connect() as conn:
        new = conn.execute(sa.text(
            f'SELECT seq, pattern_id, started_at FROM "{tables.hook_executions.name}" WHERE seq > :hw'
        ), {"hw": high_water}).all()
    query_seconds = time.perf_counter() - started
    log(f"(f) a sensor tick with {len(new):,} new rows in {patterns} patterns")
    cursor = json.dumps({"high_water": high_water, "gaps": []})
    seconds, rss, out = run_measured(
        [sys.executable, "-c", SENSOR_TICK, json.dumps({"cursor": cursor, "url": d.warehouse_url})], "sensor tick"
    )
    tick = json.loads(out.strip().splitlines()[-1])
    return {"rows": len(new), "patterns": patterns, "evaluation_seconds": tick["seconds"], "process_seconds": seconds,
            "runs": tick["runs"], "rss": rss, "query_seconds": query_seconds}


# --- (a) -------------------------------------------------------------------------------------


def bench_backfill(d: Deployment, days: int, backfill_days: int | None, single_runs: int, ui_backfill: bool) -> dict:
    """The backfill of the whole history in range runs (measured over its first `backfill_days`
    days and extrapolated when fewer than all), against one run per partition (`single_runs`
    measured and extrapolated)."""
    keys = pattern_order(d)
    first, last = history(days)
    measured_days = min(days, backfill_days or days)
    client = d.client()
    result = {"patterns": len(keys), "days": days, "partitions": len(keys) * days, "measured_days": measured_days}
    engine = get_engine(d.warehouse_url)
    with engine.connect() as conn:
        result["rows"] = conn.execute(sa.select(sa.func.count()).select_from(tables.hook_executions)).scalar()

    # One run per partition: N single-partition runs of different patterns on the first day (the
    # queue runs them side by side, up to its limits), then extrapolated linearly.
    sample = keys[:single_runs]
    log(f"(a) {len(sample)} single-partition runs")
    started = time.time()
    run_ids = [
        client.submit_job_execution("feedback_loop_job", tags={PARTITION_NAME_TAG: f"{key}|{first}", PATTERN_TAG: key})
        for key in sample
    ]
    measured = wait_runs(d, run_ids, timeout=3600) - started
    result["single_runs"] = len(sample)
    result["single_seconds"] = measured
    result["per_partition_extrapolated"] = measured / len(sample) * len(keys) * days

    log(f"(a) range runs over {len(keys)} patterns x {measured_days} of {days} days (our policy)")
    with PeakMemory(d) as memory:
        seconds, records = submit_and_wait(d, range_run_requests(keys, first, first + timedelta(days=measured_days - 1)))
    result["range_runs"] = len(records)
    result["range_measured_seconds"] = seconds
    result["range_seconds"] = seconds * days / measured_days
    result["rss"], result["rss_process"], result["cpu"] = memory.peak, memory.name, memory.cpu
    result["steps"] = step_seconds(d, records[0].dagster_run.run_id)

    if ui_backfill:
        log("(a) Dagster's UI backfill of the same set (single_run policy, split by Dagster)")
        names = [f"{k}|{first + timedelta(days=i)}" for k in keys for i in range(days)]
        started = time.time()
        backfill_id = d.launch_backfill(names, sorted(loop_asset_keys(build_definitions())), title="benchmark")

        def finished():
            backfill = d.instance.get_backfill(backfill_id)
            return backfill.status if backfill.status != BulkActionStatus.REQUESTED else None

        status = d.wait_until(finished, ceiling=7200, what="the UI backfill", interval=5)
        runs = d.instance.get_run_records(dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))
        result["ui_status"] = status.value
        result["ui_runs"] = len(runs)
        result["ui_seconds"] = max(r.end_time for r in runs) - started
    return result


# --- (g) the daily schedule -------------------------------------------------------------------


def bench_schedule_day(d: Deployment) -> dict:
    """The runs daily_loop_schedule asks for at 00:30 today (yesterday's window, every pattern),
    submitted as the daemon submits them and run by its queue."""
    today = datetime.now(UTC).date()
    when = datetime(today.year, today.month, today.day, 0, 30, tzinfo=UTC)
    with dg.build_schedule_context(instance=d.instance, scheduled_execution_time=when) as context:
        requests = daily_loop_schedule.evaluate_tick(context).run_requests
    patterns = len(pattern_order(d))
    log(f"(g) the daily schedule's {len(requests)} run(s) over {patterns} patterns x 1 window")
    with PeakMemory(d) as memory:
        seconds, records = submit_and_wait(d, requests)
    return {"patterns": patterns, "runs": len(records), "seconds": seconds, "rss": memory.peak, "rss_process": memory.name,
            "cpu": memory.cpu,
            "steps": step_seconds(d, records[0].dagster_run.run_id)}


# --- (i) scale-out: range runs over disjoint blocks, 1 worker against 2 --------------------


def bench_scale_out(d: Deployment, days: int, block_patterns: int, block_days: int) -> dict:
    """Four disjoint blocks of `block_patterns` patterns x `block_days` windows (not processed by
    the other parts): two run one after the other (one worker), two submitted together (the queue
    runs both at once: `feedback_loop/batch` allows two)."""
    keys = pattern_order(d)
    blocks = [keys[i * block_patterns:(i + 1) * block_patterns] for i in range(4)]
    last = history(days)[1] - timedelta(days=1)  # yesterday is the schedule's
    first = last - timedelta(days=block_days - 1)
    partitions = block_patterns * block_days
    log(f"(i) two range runs of {block_patterns} x {block_days} one after the other, then two at once")
    with PeakMemory(d) as one_worker:
        serial = [submit_and_wait(d, range_run_requests(block, first, last, patterns_per_run=len(block)))[0]
                  for block in blocks[:2]]
    with PeakMemory(d) as two_workers:
        together, records = submit_and_wait(
            d, [r for block in blocks[2:] for r in range_run_requests(block, first, last, patterns_per_run=len(block))]
        )
    (a, b) = sorted(records, key=lambda r: r.start_time)
    return {"block_patterns": block_patterns, "block_days": block_days, "partitions": partitions,
            "serial_seconds": sum(serial), "run_seconds": serial, "together_seconds": together,
            "overlap_seconds": max(0.0, min(a.end_time, b.end_time) - b.start_time),
            "serial_cpu": one_worker.cpu, "together_cpu": two_workers.cpu}


# --- (h) the partitions page ------------------------------------------------------------------


def bench_partitions_page(d: Deployment, chromium: str, asset: str = "feedback_dataset") -> dict:
    """Seconds until the asset's partitions page shows its partition counts in headless Chromium,
    against the asset catalog page (median of 3 loads each, after a warm-up load)."""
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    pages = {"catalog": ("/assets", re.compile(asset)),
             # the status counts come with the partitions' health, the page's slowest query
             "partitions": (f"/assets/{asset}?view=partitions", re.compile(r"Materialized \([\d,]+\)"))}
    seconds: dict[str, list[float]] = {name: [] for name in pages}
    log(f"(h) {asset}'s partitions page in Chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=args)
        try:
            for round_ in range(4):
                for name, (path, ready) in pages.items():
                    page = browser.new_page(viewport={"width": 1600, "height": 1000})
                    page.set_default_timeout(600_000)
                    started = time.perf_counter()
                    page.goto(d.url + path)
                    page.get_by_text(ready).first.wait_for()
                    if round_:
                        seconds[name].append(time.perf_counter() - started)
                    if name == "partitions" and round_ == 1:
                        page.screenshot(path=str(d.logs / "partitions-page.png"))
                    page.close()
        finally:
            browser.close()
    return {name: statistics.median(v) for name, v in seconds.items()}


# --- (b) -------------------------------------------------------------------------------------


def bench_reaction(d: Deployment, trials: int, rows: int, interval: int) -> dict:
    engine = get_engine(d.warehouse_url)
    pattern = "bench-reaction"
    today = datetime.now(UTC).date()
    local = build_definitions(FeedbackDatabases(database_url=d.warehouse_url))
    add_pattern_partitions(d.instance, [pattern])
    log("(b) two days of history so the pattern has a running A/B experiment")
    for day in experiment_history(engine, pattern, today - timedelta(days=3), 2, per_day=600):
        materialize_windows(local, d.instance, [pattern], day, day, run_config=quiet_run_config())
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
from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.in_process_runs.runs import launch_in_process, quiet_run_config, range_run_requests
args = json.loads(sys.argv[1])
job = build_definitions(FeedbackDatabases(database_url=args["url"])).resolve_job_def("feedback_loop_job")
first, last = date.fromisoformat(args["first"]), date.fromisoformat(args["last"])
started = time.time()
runs = 0
with dg.DagsterInstance.get() as instance:
    step = args["days_per_run"]
    day = first
    while day <= last:
        end = min(last, date.fromordinal(day.toordinal() + step - 1))
        for request in range_run_requests(args["keys"], day, end):
            result = launch_in_process(job, instance, request.tags, run_config=quiet_run_config())
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
            cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore", "FEEDBACK_LOOP_START_DATE": first.isoformat()},
            capture_output=True, text=True, timeout=6 * 3600,
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
    job = build_definitions(FeedbackDatabases(database_url=d.warehouse_url)).resolve_job_def("feedback_loop_job")
    tags = range_run_tags([pattern], day, day)
    quiet = quiet_run_config()
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


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def aim(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_history(h: dict) -> None:
    print(f"history: {h['rows']:,} simulated executions written in {h['seconds']:.0f} s")


def print_sync(sync: dict) -> None:
    print(f"(e) patterns sync of {sync['patterns']:,} new patterns: {sync['seconds']:.1f} s, peak RSS {gib(sync['rss'])}; "
          f"baseline: the SELECT DISTINCT it runs {sync['query_seconds']:.2f} s, the CLI's start "
          f"{sync['start_seconds']:.1f} s -> {sync['seconds'] / sync['start_seconds']:.1f}x the start")


def print_tick(tick: dict) -> None:
    print(f"(f) sensor tick, {tick['rows']:,} new rows in {tick['patterns']:,} patterns: evaluation "
          f"{tick['evaluation_seconds']:.1f} s ({tick['process_seconds']:.1f} s with the process start), "
          f"{tick['runs']} range run(s) requested, peak RSS {gib(tick['rss'])}; baseline: reading the new rows "
          f"{tick['query_seconds']:.2f} s -> {tick['evaluation_seconds'] / tick['query_seconds']:.1f}x")


def print_backfill(a: dict) -> None:
    per = a["single_seconds"] / a["single_runs"]
    speedup = a["per_partition_extrapolated"] / a["range_seconds"]
    print(f"(a) backfill {a['patterns']} patterns x {a['days']} days = {a['partitions']:,} partitions "
          f"({a['rows']:,} executions)")
    print(f"    one run per partition : {a['single_runs']} single-partition runs measured in {a['single_seconds']:.0f} s "
          f"= {per:.1f} s/partition; EXTRAPOLATED to {a['partitions']:,}: {a['per_partition_extrapolated']:,.0f} s")
    measured = a["patterns"] * a["measured_days"]
    extrapolated = (f"; EXTRAPOLATED to {a['days']} days: {a['range_seconds']:,.0f} s"
                    if a["measured_days"] < a["days"] else "")
    print(f"    our policy (range runs): {a['range_runs']} run(s) over {a['measured_days']} day(s) = {measured:,} partitions, "
          f"{a['range_measured_seconds']:.0f} s measured ({a['range_measured_seconds'] / measured:.3f} s/partition)"
          f"{extrapolated} -> {speedup:,.0f}x faster  [aim >= 50x: {aim(speedup >= 50)}]")
    print(f"    peak RSS of one process {gib(a['rss'])} ({a['rss_process']}); CPU of the deployment's processes "
          f"{a['cpu']:.0f} s = {a['cpu'] / measured:.3f} s/partition")
    print(f"    steps of its first run: {steps_line(a['steps'])}")
    if "ui_runs" in a:
        ui = a["per_partition_extrapolated"] / a["ui_seconds"]
        print(f"    Dagster UI backfill   : {a['ui_runs']} runs (single_run policy, split per day by Dagster), "
              f"{a['ui_seconds']:.0f} s measured, {a['ui_status']} -> {ui:,.0f}x faster")


def print_schedule_day(sched: dict) -> None:
    per = sched["seconds"] / sched["patterns"]
    line = f"(g) the daily schedule's day: {sched['runs']} range run(s) over {sched['patterns']:,} partitions in {sched['seconds']:.0f} s"
    if sched.get("single_seconds"):
        single = sched["single_seconds"]
        line += f" = {per:.3f} s/partition; baseline one run per partition {single:.1f} s -> {single / per:,.0f}x"
    print(line + f"; peak RSS of one process {gib(sched['rss'])} ({sched['rss_process']}); CPU of the deployment's "
          f"processes {sched['cpu']:.0f} s = {sched['cpu'] / sched['patterns']:.3f} s/partition")
    print(f"    steps of its first run: {steps_line(sched['steps'])}")


def print_scale_out(out: dict) -> None:
    per = out["run_seconds"][0] / out["partitions"]
    ratio = 2 * out["partitions"] / out["together_seconds"] / (2 * out["partitions"] / out["serial_seconds"])
    print(f"(i) scale-out, range runs of {out['block_patterns']} patterns x {out['block_days']} days over disjoint blocks:")
    print(f"    1 worker : 2 runs one after the other {', '.join(f'{x:.0f}' for x in out['run_seconds'])} s "
          f"= {out['serial_seconds']:.0f} s; {per:.3f} s/partition in a {out['block_patterns']} x {out['block_days']} "
          f"range run [aim < 0.1 s: {aim(per < 0.1)}]")
    print(f"    2 workers: 2 runs at once (QueuedRunCoordinator, feedback_loop/batch limit 2) {out['together_seconds']:.0f} s, "
          f"overlapping {out['overlap_seconds']:.0f} s, both succeeded -> throughput {ratio:.2f}x one worker's")
    print(f"    CPU of the deployment's processes: {out['serial_cpu']:.0f} s one after the other, {out['together_cpu']:.0f} s at once")


def print_partitions_page(page: dict) -> None:
    print(f"(h) partitions page of feedback_dataset in Chromium (median of 3): {page['partitions']:.1f} s; "
          f"baseline the asset catalog {page['catalog']:.1f} s -> {page['partitions'] / page['catalog']:.1f}x")


def print_reaction(b: dict) -> None:
    r = b["reactions"]
    print(f"(b) sensor reaction, rows inserted -> A/B result updated; sensor interval {b['interval']} s, "
          f"{b['rows']} rows per trial")
    print(f"    trials: {', '.join(f'{x:.1f}' for x in r)} s; median {statistics.median(r):.1f} s, max {max(r):.1f} s "
          f"[aim < 60 s: {aim(max(r) < 60)}]")


def print_memory(c: dict) -> None:
    size = c["max_rss_kib"] * 1024
    print(f"(c) backfill over {c['executions']:,} executions ({c['collected']:,} collected; {c['patterns']} patterns x "
          f"{c['days']} days) in {c['runs']} range run(s) of {c['days_per_run']} day(s): {c['seconds']:.0f} s")
    print(f"    peak memory (max RSS of the run process) {gib(size)} [aim < 2 GiB: {aim(size < 2 * 2**30)}]; "
          f"data written by PostgreSQL generate_series in {c['write_seconds']:.0f} s")


def print_launch(e: dict) -> None:
    base = e["medians"]["execute_in_process"]
    print(f"(d) one-partition run of the whole graph by launch path, median of {e['rounds']}")
    for name, value in e["medians"].items():
        print(f"    {name:<22}: {value:6.2f} s  {value / base:5.2f}x")
    linked = e["medians"]["linked in-process"]
    print(f"    one partition through the whole graph (linked in-process, the CLI's path) [aim < 1 s: {aim(linked < 1)}]")


# In the order the parts run.
PRINTERS = {
    "history": print_history,
    "e": print_sync,
    "f": print_tick,
    "a": print_backfill,
    "g": print_schedule_day,
    "i": print_scale_out,
    "h": print_partitions_page,
    "b": print_reaction,
    "c": print_memory,
    "d": print_launch,
}


def report(parts: dict, load: dict, header: bool = True) -> None:
    """The figures of `parts`; without the header, as each part ends (a run cut short keeps them)."""
    if header:
        print("\n" + "=" * 100)
        print("Deployment benchmark on PostgreSQL (dagster-daemon + dagster-webserver, repository dagster.yaml)")
        print(f"machine: {os.cpu_count()} CPUs; Dagster {dg.__version__}; load average (1 min) at each part's end:"
              f" {', '.join(f'{k} {v:.2f}' for k, v in load.items())}")
        print("=" * 100)
    for key, printer in PRINTERS.items():
        if parts.get(key):
            printer(parts[key])
    if header:
        print("=" * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patterns", type=int, default=200, help="simulated patterns (a, e-i)")
    parser.add_argument("--days", type=int, default=14, help="simulated days ending yesterday (a, e-i)")
    parser.add_argument("--per-day", type=int, default=20, help="executions per pattern and day")
    parser.add_argument("--backfill-days", type=int, default=3,
                        help="(a) days of the backfill measured (0: all); more are extrapolated from them")
    parser.add_argument("--single-runs", type=int, default=10)
    parser.add_argument("--ui-backfill", action="store_true", help="(a) also Dagster's own UI backfill (slow)")
    parser.add_argument("--tick-rows", type=int, default=5, help="(f) new rows per pattern")
    parser.add_argument("--block-patterns", type=int, default=50, help="(i) patterns per block")
    parser.add_argument("--block-days", type=int, default=7, help="(i) days per block")
    parser.add_argument("--chromium", default=os.environ.get("FEEDBACK_LOOP_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--sensor-interval", type=int, default=30)
    parser.add_argument("--reaction-trials", type=int, default=2)
    parser.add_argument("--reaction-rows", type=int, default=200)
    parser.add_argument("--memory-executions", type=int, default=1_000_000)
    parser.add_argument("--memory-patterns", type=int, default=10)
    parser.add_argument("--memory-days", type=int, default=20)
    parser.add_argument("--memory-days-per-run", type=int, default=None, help="(c) windows per range run [all]")
    parser.add_argument("--launch-rounds", type=int, default=3, help="(d) rounds of the three launch paths")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: a-i")
    options = parser.parse_args()
    skip = set(filter(None, options.skip.split(",")))
    if options.patterns < 4 * options.block_patterns and "i" not in skip:
        parser.error(f"(i) needs --patterns >= 4 x --block-patterns ({4 * options.block_patterns})")
    if options.days < options.block_days + 2:
        parser.error("--days must exceed --block-days by 2 (the schedule's day, the backfill's first)")
    admin_url = os.environ.get("FEEDBACK_LOOP_TEST_POSTGRES_URL") or DEFAULT_ADMIN_URL

    parts: dict[str, dict] = {}
    load: dict[str, float] = {}

    def part(name: str, measure) -> None:
        if name not in skip:
            parts[name] = measure()
            load[name] = os.getloadavg()[0]
            report({name: parts[name]}, load, header=False)
            log(f"({name}) done; load average {os.getloadavg()}")

    started = time.time()
    with Deployment(Path(tempfile.mkdtemp(prefix="fld-bench-")), admin_url, sensor_interval_seconds=options.sensor_interval,
                    start_date=os.environ["FEEDBACK_LOOP_START_DATE"]) as d:
        d.start_daemon()
        d.start_webserver()
        log(f"deployment up: {d.url}, logs in {d.logs}")
        if not set("aefghi") <= skip:  # they share the simulated history and need its patterns synced
            parts["history"] = write_history(d, options.patterns, options.days, options.per_day)
            report({"history": parts["history"]}, load, header=False)
            skip.discard("e")
        part("e", lambda: bench_sync(d))
        part("f", lambda: bench_sensor_tick(d, options.patterns, options.tick_rows))
        part("a", lambda: bench_backfill(d, options.days, options.backfill_days, options.single_runs, options.ui_backfill))
        part("g", lambda: {**bench_schedule_day(d),
                           "single_seconds": parts["a"]["single_seconds"] / parts["a"]["single_runs"] if "a" in parts else None})
        part("i", lambda: bench_scale_out(d, options.days, options.block_patterns, options.block_days))
        part("h", lambda: bench_partitions_page(d, options.chromium))
        part("b", lambda: bench_reaction(d, options.reaction_trials, options.reaction_rows, options.sensor_interval))
        part("d", lambda: bench_launch(d, options.launch_rounds))
        if "c" not in skip:
            d.stop("daemon")  # (c) measures one process; nothing else should compete for the CPUs
        part("c", lambda: bench_memory(d, admin_url, options.memory_executions, options.memory_patterns,
                                       options.memory_days, options.memory_days_per_run))
    report(parts, load)
    log(f"benchmark took {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
