"""Runs launched in this process (CLI, demo, Python API, tests), as runs of the code location.

`materialize_windows` runs the loop's job over a rectangle of partitions by set-based range runs.
Each run is executed here, in-process, but recorded as a run of the code location
`feedback_loop_dagster` (workspace.yaml, pyproject's [tool.dagster] / [tool.dg]), exactly as a run
launched from the UI or by the daemon is, so the UI links it: the job's Runs tab lists it, run
links resolve to the job, and the Overview timeline shows it.

Dagster's public in-process entry points (`JobDefinition.execute_in_process`, `execute_job`)
create runs without a remote origin, which the UI then cannot place ("No runs found",
`/guess/<job>` links). Only a launch through a workspace sets one, and that costs a code server
start plus a Python process per run (seconds each; measured in benchmarks/deployment.py). So the
run is created here with the origins such a launch would record, through `dagster._core`
(`create_run_for_job` with `remote_job_origin` / `job_code_origin`, then `execute_run`), which
has no public equivalent; the cost over `execute_in_process` is a second execution plan
(benchmarks/deployment.py, "in-process run linked to the code location").

In-process runs also:
- capture no compute logs: the instance's default LocalComputeLogManager mirrors stdout and stderr
  through two `tail -F` processes per run, which SIGTERM ends (a caller that ignores SIGTERM leaves
  them behind and waits 30 s for each); the CLI and the demo print their own progress;
- name their process (`run_workers.RUN_WORKER_TAG`), so a run whose process died is marked failed
  at the next launch on the host (`fail_dead_runs`, called here) or by the daemon's run monitoring;
- are not retried by the daemon (`dagster/max_retries` 0): whoever launched one sees its outcome
  and decides; a retry behind their back would race their own rerun.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta

import dagster as dg

# Private on purpose: recording a run with the code location's origins has no public API (module
# docstring). dagster is pinned; a moved name fails this import, and test_runs.py checks that the
# runs carry the origins workspace.yaml gives the webserver and have no compute logs.
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import execute_run
from dagster._core.origin import JobPythonOrigin
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.noop_compute_log_manager import NoOpComputeLogManager
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG, MAX_RETRIES_TAG
from dagster._core.workspace.load import location_origin_from_module_name
from dagster._serdes import ConfigurableClassData

from feedback_loop_dagster.defs.code_location.clock import clock_run_config
from feedback_loop_dagster.defs.code_location.jobs import BATCH_TAG, PATTERN_TAG
from feedback_loop_dagster.defs.code_location.partitions import partition_key, patterns_partitions
from feedback_loop_dagster.defs.code_location.resources import keep_instance_connections
from feedback_loop_dagster.defs.in_process_runs.run_workers import current_worker_tags, fail_dead_runs

# The code location as workspace.yaml and pyproject.toml name it (a test holds them equal).
CODE_LOCATION = "feedback_loop_dagster"
CODE_LOCATION_MODULE = "feedback_loop_dagster.definitions"
DEFINITIONS_ATTRIBUTE = "defs"
# Patterns per range run (the schedule's and the sensor's): big enough that 10,000 patterns take a
# handful of runs, small enough that one run's set-based queries stay modest. A whole run is
# retried on failure, so this also bounds redo.
PATTERNS_PER_RUN = 500
# Partitions per range run. Creating a run writes one planned row per partition and partitioned
# asset check, each carrying the run's whole partition list (dagster 1.13.27,
# SqlEventLogStorage._store_asset_check_evaluation_planned), so a run of N partitions costs O(N^2)
# before it starts. Measured on a PostgreSQL instance (docs/deploy.md, Backfills): 1,000
# partitions 4 s and 58 MB of rows; 3,500 partitions 40 s and 692 MB; 45,000 (500 patterns x 90
# days) never got started, the webserver at 3.8 GiB after 4 minutes. At 1,000 that cost (4.0 ms
# per partition) is about what the run's own start costs per partition (3.6 s / 1,000).
MAX_PARTITIONS_PER_RUN = 1_000
NO_COMPUTE_LOGS = ConfigurableClassData(
    module_name=NoOpComputeLogManager.__module__, class_name=NoOpComputeLogManager.__name__, config_yaml="{}\n"
)
_RUN_HANDLES: weakref.WeakSet[dg.DagsterInstance] = weakref.WeakSet()  # what run_handle made, reused as they are


def quiet_run_config(now: datetime | None = None, console_log_level: str = "WARNING") -> dict:
    """Run config of a run whose caller prints its own progress: Dagster's console logger only from
    `console_log_level` up (at DEBUG it prints every step event; the run's own log keeps every line
    for the UI), with the clock at `now` (None: the clock the definitions were built with)."""
    return clock_run_config(now, {"loggers": {"console": {"config": {"log_level": console_log_level}}}})


def add_pattern_partitions(instance: dg.DagsterInstance, pattern_keys: Sequence[str]) -> list[str]:
    """Adds the keys the instance does not know yet; returns those."""
    known = set(instance.get_dynamic_partitions(patterns_partitions.name))
    new = [k for k in dict.fromkeys(pattern_keys) if k not in known]
    if new:
        instance.add_dynamic_partitions(patterns_partitions.name, new)
    return new


def contiguous_blocks(order: Sequence[str], pattern_keys: Sequence[str]) -> list[list[str]]:
    """Splits keys into runs of neighbours in `order` (the instance's order of the `patterns`
    partitions), each a valid range."""
    position = {k: i for i, k in enumerate(order)}
    unknown = [k for k in pattern_keys if k not in position]
    if unknown:
        raise ValueError(f"unknown pattern partition key(s): {unknown[:5]}")
    blocks: list[list[str]] = []
    for key in sorted(set(pattern_keys), key=position.__getitem__):
        if blocks and position[key] == position[blocks[-1][-1]] + 1:
            blocks[-1].append(key)
        else:
            blocks.append([key])
    return blocks


def range_run_tags(pattern_keys: Sequence[str], first_window: date, last_window: date) -> dict[str, str]:
    """Tags of one run over the rectangle (pattern_keys[0]..pattern_keys[-1]) x (first..last window).

    The keys must be neighbours in the instance's partition order (a block of `contiguous_blocks`),
    since Dagster expands a multi-partition range dimension by dimension."""
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: str(partition_key(pattern_keys[0], first_window)),
        ASSET_PARTITION_RANGE_END_TAG: str(partition_key(pattern_keys[-1], last_window)),
    }
    if len(pattern_keys) == 1:
        tags[PATTERN_TAG] = pattern_keys[0]
    else:
        tags[BATCH_TAG] = f"{pattern_keys[0]}..{pattern_keys[-1]}"
    return tags


def window_ranges(windows: Iterable[date]) -> list[tuple[date, date]]:
    """Maximal runs of consecutive days, oldest first: {1, 2, 3, 5} -> [(1, 3), (5, 5)]."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(windows)):
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def partition_rectangles(
    order: Sequence[str], pairs: Iterable[tuple[str, date]]
) -> list[tuple[list[str], date, date]]:
    """Covers the (pattern_key, window) `pairs` by range-run rectangles (a block of neighbouring
    keys in `order` x a range of consecutive windows) that hold no other partition: each pattern's
    windows split into consecutive ranges, and the patterns sharing a range form blocks. Oldest
    range first, so late windows are processed before newer ones."""
    windows_of: dict[str, set[date]] = {}
    for key, window in pairs:
        windows_of.setdefault(key, set()).add(window)
    keys_of: dict[tuple[date, date], list[str]] = {}
    for key, windows in windows_of.items():
        for span in window_ranges(windows):
            keys_of.setdefault(span, []).append(key)
    return [
        (block, first, last)
        for (first, last), keys in sorted(keys_of.items())
        for block in contiguous_blocks(order, keys)
    ]


def run_rectangles(
    pattern_keys: Sequence[str], first_window: date, last_window: date, patterns_per_run: int = PATTERNS_PER_RUN
) -> list[tuple[list[str], date, date]]:
    """The range runs over `pattern_keys` (neighbours in the instance's partition order) x the
    windows: blocks of at most `patterns_per_run` patterns, each over consecutive windows, so that
    no run holds more than MAX_PARTITIONS_PER_RUN partitions; oldest windows first. The runs of one
    block share its `feedback_loop/batch` tag, which the run queue lets through one at a time, so
    its windows stay in order through the daemon too."""
    patterns_per_run = min(patterns_per_run, MAX_PARTITIONS_PER_RUN)
    rectangles = []
    for start in range(0, len(pattern_keys), patterns_per_run):
        block = list(pattern_keys[start : start + patterns_per_run])
        days_per_run = max(1, MAX_PARTITIONS_PER_RUN // len(block))
        first = first_window
        while first <= last_window:
            last = min(last_window, first + timedelta(days=days_per_run - 1))
            rectangles.append((block, first, last))
            first = last + timedelta(days=1)
    return sorted(rectangles, key=lambda rectangle: rectangle[1])  # stable: blocks keep their order


def range_run_requests(
    pattern_keys: Sequence[str],
    first_window: date,
    last_window: date,
    patterns_per_run: int = PATTERNS_PER_RUN,
    run_key_prefix: str | None = None,
) -> list[dg.RunRequest]:
    """Range runs over `pattern_keys` (neighbours in the instance's partition order) x the windows,
    split by `run_rectangles`. 100 patterns x 90 days is 9 runs, where one run per partition would
    be 9,000."""
    requests = []
    for block, first, last in run_rectangles(pattern_keys, first_window, last_window, patterns_per_run):
        run_key = None
        if run_key_prefix:
            # One run per block and window range, even if a tick is evaluated twice.
            run_key = f"{run_key_prefix}|{first}|{last}|{block[0]}|{block[-1]}|{len(block)}"
        requests.append(dg.RunRequest(run_key=run_key, tags=range_run_tags(block, first, last)))
    return requests


def code_location_origins(job_name: str) -> tuple[RemoteJobOrigin, JobPythonOrigin]:
    """The origins a launch of `job_name` through the workspace records: the remote one (location and
    repository names, what the UI matches runs by) and the Python one (where the code is)."""
    location = location_origin_from_module_name(CODE_LOCATION_MODULE, None, None, location_name=CODE_LOCATION)
    remote = RemoteJobOrigin(RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME), job_name)
    repository = ReconstructableRepository.for_module(CODE_LOCATION_MODULE, DEFINITIONS_ATTRIBUTE)
    return remote, repository.get_reconstructable_job(job_name).get_python_origin()


@contextlib.contextmanager
def run_handle(instance: dg.DagsterInstance) -> Iterator[dg.DagsterInstance]:
    """`instance`, or when it persists a second handle on the same storage for the runs executed
    here: no compute logs (nothing to mirror; the CLI and the demo print their own progress), and
    connections kept open across queries as the webserver keeps them (dagster-postgres otherwise
    opens one per query, about 7 ms each here: half the demo's time on a PostgreSQL instance)."""
    if not instance.is_persistent or instance in _RUN_HANDLES:
        yield instance
        return
    # InstanceRef is a NamedTuple of the instance's configured classes; only the compute logs change.
    handle = dg.DagsterInstance.from_ref(instance.get_ref()._replace(compute_logs_data=NO_COMPUTE_LOGS))
    keep_instance_connections(handle)
    _RUN_HANDLES.add(handle)
    try:
        yield handle
    finally:
        handle.dispose()


def launch_in_process(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    tags: dict[str, str],
    run_config: dict | None = None,
    asset_selection: Sequence[dg.AssetKey] | None = None,
    raise_on_error: bool = True,
) -> dg.JobExecutionResult:
    """One run of `job` (a job of the code location, with the caller's resources), executed here
    and recorded as the code location's run (see the module docstring)."""
    job = job.with_executor_def(dg.in_process_executor)
    remote_origin, python_origin = code_location_origins(job.name)
    with run_handle(instance) as run_instance:
        run = run_instance.create_run_for_job(
            job_def=job,
            run_config=run_config or {},
            tags={**job.run_tags, MAX_RETRIES_TAG: "0", **current_worker_tags(), **tags},
            asset_selection=frozenset(asset_selection) if asset_selection else None,
            remote_job_origin=remote_origin,
            job_code_origin=python_origin,
        )
        return execute_run(InMemoryJob(job), run, run_instance, raise_on_error=raise_on_error)


def materialize_windows(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    pattern_keys: Sequence[str],
    first_window: date,
    last_window: date,
    job_name: str = "feedback_loop_job",
    run_config: dict | None = None,
    asset_selection: Sequence[dg.AssetKey] | None = None,
    raise_on_error: bool = True,
) -> list[dg.JobExecutionResult]:
    """Range runs over [first_window, last_window] for the contiguous blocks of `pattern_keys`,
    split by `run_rectangles`, one after the other, oldest windows first.

    `run_config` is passed to every run (e.g. `quiet_run_config`);
    `asset_selection` runs only those assets of the job (e.g. only `feedback_dataset`). Runs left
    unfinished by a process of this host that died are marked failed first."""
    fail_dead_runs(instance)
    job = defs.resolve_job_def(job_name)
    order = instance.get_dynamic_partitions(patterns_partitions.name)
    rectangles = sorted(
        (rectangle for block in contiguous_blocks(order, pattern_keys) for rectangle in run_rectangles(block, first_window, last_window)),
        key=lambda rectangle: rectangle[1],
    )
    with run_handle(instance) as run_instance:  # one handle for all the runs
        return [
            launch_in_process(
                job,
                run_instance,
                range_run_tags(block, first, last),
                run_config=run_config,
                asset_selection=asset_selection,
                raise_on_error=raise_on_error,
            )
            for block, first, last in rectangles
        ]
