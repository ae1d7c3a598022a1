"""Scale-out: two range runs over disjoint blocks of patterns, at the same time, in two processes
against one PostgreSQL warehouse (what two run workers of the QueuedRunCoordinator do; the
deployment benchmark measures their throughput), both succeed and leave the warehouse exactly as
the same two runs one after the other do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from feedback_loop_dagster.defs.code_location.partitions import patterns_partitions
from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.database import get_engine
from feedback_loop_dagster.lib.storage.migrations import init_databases
from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids
from feedback_loop_dagster.simulator import SimulationConfig, pattern_ids, simulate_to_database
from feedback_loop_dagster_tests.conftest import create_postgres_database, drop_postgres_database
from feedback_loop_dagster_tests.processes import CEILING_SECONDS

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FIRST = date(2025, 3, 1)
DAYS = 3
SIMULATION = SimulationConfig(patterns=6, days=DAYS, per_day=80, seed=5, end_date=FIRST + timedelta(days=DAYS))

# One range run in its own process, started when the `go` file appears (so two start together).
RANGE_RUN = r"""
import json, sys, time
from datetime import date
from pathlib import Path
import dagster as dg
from feedback_loop_dagster.definitions import build_definitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.in_process_runs.runs import launch_in_process, range_run_tags
args = json.loads(sys.argv[1])
job = build_definitions(FeedbackDatabases(database_url=args["url"])).resolve_job_def("feedback_loop_job")
tags = range_run_tags(args["keys"], date.fromisoformat(args["first"]), date.fromisoformat(args["last"]))
Path(args["ready"]).touch()
while not Path(args["go"]).exists():
    time.sleep(0.05)
with dg.DagsterInstance.get() as instance:
    result = launch_in_process(job, instance, tags, raise_on_error=False)
print(json.dumps({"run_id": result.run_id, "success": result.success}))
"""

# Surrogate keys, their references (a proposal's fingerprint hashes its base version's id) and
# timestamps differ between any two databases; the rest is the state.
VOLATILE = ("id", "run_id", "fingerprint")


def _canonical(value) -> str:
    """A value as text; JSON documents with their keys sorted (their order is not state), floats to
    12 significant digits (a sum in the database adds rows in their physical order, which the
    interleaving of two writers changes in the last bits)."""
    if isinstance(value, float):
        return f"{value:.12g}"
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            pass
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return repr(value)


def _state(engine) -> dict[str, list[tuple]]:
    state = {}
    with engine.connect() as conn:
        for table in tables.warehouse_metadata.sorted_tables:
            columns = [
                c for c in table.columns
                if c.name not in VOLATILE and not c.name.endswith("_at")
                and not (c.name.endswith("_id") and c.name not in ("pattern_id", "execution_id"))
            ]
            rows = conn.execute(sa.select(*columns)).all()
            state[table.name] = sorted(tuple(map(_canonical, row)) for row in rows)
    return state


def _deployment(tmp_path: Path, name: str) -> tuple[str, dict[str, str], list[list[str]]]:
    """A warehouse with the simulated executions and a Dagster instance that knows its patterns;
    returns the URL, the environment of its run processes and two disjoint blocks of pattern keys."""
    url = create_postgres_database()
    engine = get_engine(url)
    init_databases(engine, engine)
    simulate_to_database(engine, SIMULATION, create_table=False)
    keys = register_pattern_ids(engine, pattern_ids(SIMULATION.patterns))
    home = tmp_path / name
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "FEEDBACK_LOOP_DATABASE_URL": url,
           "FEEDBACK_LOOP_START_DATE": FIRST.isoformat(), "PYTHONWARNINGS": "ignore"}
    env.pop("FEEDBACK_LOOP_SOURCE_URL", None)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        add_pattern_partitions(instance, sorted(keys.values()))
        order = instance.get_dynamic_partitions(patterns_partitions.name)
    half = len(order) // 2
    return url, env, [order[:half], order[half:]]


def _run_blocks(tmp_path: Path, url: str, env: dict[str, str], blocks: list[list[str]], together: bool) -> list[dict]:
    go = tmp_path / f"go-{together}"
    results = []
    procs = []
    for i, block in enumerate(blocks):
        ready = tmp_path / f"ready-{together}-{i}"
        args = {"url": url, "keys": block, "first": FIRST.isoformat(),
                "last": (FIRST + timedelta(days=DAYS - 1)).isoformat(), "ready": str(ready), "go": str(go)}
        if not together:
            go.touch()
        procs.append(subprocess.Popen([sys.executable, "-c", RANGE_RUN, json.dumps(args)], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        if not together:
            out, err = procs.pop().communicate(timeout=CEILING_SECONDS)
            assert out.strip(), err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    if together:
        while not all((tmp_path / f"ready-{together}-{i}").exists() for i in range(len(blocks))):
            assert all(p.poll() is None for p in procs), [p.communicate()[1][-3000:] for p in procs]
            time.sleep(0.1)
        go.touch()
        for proc in procs:
            out, err = proc.communicate(timeout=CEILING_SECONDS)
            assert out.strip(), err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_range_runs_over_disjoint_blocks_at_once_leave_the_state_of_running_them_in_turn(tmp_path):
    urls = []
    try:
        serial_url, serial_env, blocks = _deployment(tmp_path, "serial")
        urls.append(serial_url)
        together_url, together_env, together_blocks = _deployment(tmp_path, "together")
        urls.append(together_url)
        assert blocks == together_blocks and set(blocks[0]).isdisjoint(blocks[1])

        serial = _run_blocks(tmp_path, serial_url, serial_env, blocks, together=False)
        together = _run_blocks(tmp_path, together_url, together_env, blocks, together=True)

        assert all(r["success"] for r in serial + together), (serial, together)
        with dg.DagsterInstance.from_config(together_env["DAGSTER_HOME"]) as instance:
            first, second = sorted((instance.get_run_record_by_id(r["run_id"]) for r in together),
                                   key=lambda record: record.start_time)
            assert second.start_time < first.end_time, "the two runs did not overlap"
        serial_state, together_state = _state(get_engine(serial_url)), _state(get_engine(together_url))
        assert together_state["feedback_partitions"], "nothing was collected"
        differences = {
            name: (sorted(set(rows) - set(serial_state[name]))[:2], sorted(set(serial_state[name]) - set(rows))[:2])
            for name, rows in together_state.items() if rows != serial_state[name]
        }
        assert differences == {}, json.dumps(differences, indent=1)[:8000]
    finally:
        for url in urls:
            drop_postgres_database(url)
