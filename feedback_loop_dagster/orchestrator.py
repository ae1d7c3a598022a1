"""The original design's Python API on the real system.

    from feedback_loop_dagster import ModelFeedbackLoopInput, NodeFeedbackLoopOrchestrator

    result = await NodeFeedbackLoopOrchestrator().execute_orchestration(
        ModelFeedbackLoopInput(pattern_id="code-review", feedback_type="reliability", min_sample_size=30)
    )
    result.success, result.data["improvements_applied"], result.data["p_value"]

`execute_orchestration` runs the same asset code as the Dagster UI, in-process through the
code location's job: it stores the input's policy fields as the pattern's policy (validated by
the engine's `Policy`), collects the `time_window_days` windows ending at the pattern's latest
complete window, and, when there is enough feedback, materialises the whole graph for that
window. The output is read back from the warehouse the assets wrote (lib/report/outcome.py).

Concurrency: the blocking work runs in a worker thread, so `asyncio.gather` over several
patterns keeps the event loop free; the runs themselves are serialised per process by one
lock, because concurrent writers on one SQLite file can deadlock (a deferred transaction that
upgrades to a write lock cannot wait for another). Across processes, runs of one pattern are
kept apart by the QueuedRunCoordinator's per-pattern limit when launched through the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from feedback_loop_dagster.contracts import (
    STAGE_OF_ASSET,
    WORKFLOW_STAGES,
    ModelFeedbackLoopInput,
    ModelFeedbackLoopOutput,
    ModelResult,
)
from feedback_loop_dagster.lib import partition_start, settings
from feedback_loop_dagster.lib.errors import InvalidInput
from feedback_loop_dagster.lib.report.outcome import LoopReport

log = logging.getLogger(__name__)

# One in-process run at a time per process (see the module docstring).
RUN_LOCK = threading.RLock()
# The callers (CLI, demo, Python API) report what failed themselves, one line per failed
# partition (defs/in_process_runs/failures.py); the run's own log keeps every line for the UI.
CONSOLE_LOG_LEVEL = "CRITICAL"
# How a stage's outcome for a partition reads in the output contract's workflow_stages.
STAGE_STATES = {"ok": "completed", "failed": "failed", "skipped": "skipped"}


@dataclass
class LoopRunner:
    """Runs the loop's job in-process against one warehouse and one Dagster instance."""

    database_url: str | None = None
    source_url: str | None = None
    instance: Any = None  # dagster.DagsterInstance; default: the one in $DAGSTER_HOME
    # The moment the loop acts at (see defs/code_location/clock.py); None: the real clock. Only simulations
    # replaying past days set it.
    now: datetime | None = None

    def __post_init__(self) -> None:
        self.database_url = self.database_url or settings.database_url()
        self.source_url = self.source_url or (settings.source_url() if self.database_url == settings.database_url() else self.database_url)
        self._defs = None

    @property
    def warehouse(self):
        from feedback_loop_dagster.lib.storage.database import get_engine

        return get_engine(self.database_url)

    @property
    def source(self):
        from feedback_loop_dagster.lib.storage.database import get_engine

        return get_engine(self.source_url)

    def dagster_instance(self):
        if self.instance is None:
            import dagster as dg

            os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home()))
            settings.dagster_home()
            self.instance = dg.DagsterInstance.get()
        return self.instance

    def definitions(self):
        if self._defs is None:
            from feedback_loop_dagster.definitions import build_definitions
            from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases

            # The environment's databases as the code location names them, so the runs have its
            # job snapshot and the UI re-executes them without a "changed" warning.
            environment = (self.database_url, self.source_url) == (settings.database_url(), settings.source_url())
            databases = None if environment else FeedbackDatabases(database_url=self.database_url, source_url=self.source_url)
            self._defs = build_definitions(databases=databases)
        return self._defs

    def register(self, pattern_ids: Sequence[str]) -> dict[str, str]:
        """Partition keys of the patterns, registered in the warehouse and the instance."""
        from feedback_loop_dagster.defs.in_process_runs.runs import add_pattern_partitions
        from feedback_loop_dagster.lib.storage.partition_key_map import register_pattern_ids

        keys = register_pattern_ids(self.warehouse, list(pattern_ids))
        add_pattern_partitions(self.dagster_instance(), sorted(keys.values()))
        return keys

    def materialize(
        self, pattern_keys: Sequence[str], first: date, last: date, only: Sequence[str] | None = None
    ) -> tuple[set[str], list[str]]:
        """Range runs over [first, last] of the whole graph (or of the assets `only`); returns
        (assets materialised, run ids). A failed run does not stop the next ones: see
        defs/in_process_runs/failures.run_failures for what failed."""
        import dagster as dg

        from feedback_loop_dagster.defs.in_process_runs.runs import materialize_windows, quiet_run_config

        selection = [dg.AssetKey(name) for name in only] if only else None
        with RUN_LOCK:
            results = materialize_windows(
                self.definitions(), self.dagster_instance(), list(pattern_keys), first, last,
                run_config=quiet_run_config(self.now, CONSOLE_LOG_LEVEL), asset_selection=selection,
                raise_on_error=False,
            )
        materialised = set()
        for result in results:
            for event in result.get_asset_materialization_events():
                materialised.add(event.asset_key.to_user_string())
        return materialised, [r.run_id for r in results]


def _analysis_period(runner: LoopRunner, pattern_id: str, window: date | None, contract: ModelFeedbackLoopInput | None):
    """(window, the analysis period's first window, policy): `window` defaults to the pattern's
    latest complete window; the policy is the stored one, or the contract's fields over it. A
    window before the first daily partition is bad input (InvalidInput, a ValueError)."""
    from feedback_loop_dagster.lib.collect.source import latest_day_with_executions
    from feedback_loop_dagster.lib.experiment.experiments import open_window
    from feedback_loop_dagster.lib.registry.policies import get_policy

    today = open_window(runner.now)
    window = window or latest_day_with_executions(runner.source, pattern_id, before=today) or today - timedelta(days=1)
    with runner.warehouse.begin() as conn:
        policy = get_policy(conn, pattern_id)
        if contract is not None:
            policy = contract.policy(policy)
    first_partition = date.fromisoformat(partition_start.window_start_date())
    if window < first_partition:
        raise InvalidInput(
            f"window {window} is before the first daily partition {first_partition} "
            f"(set {settings.START_DATE_ENV} to an earlier date)"
        )
    return window, max(window - timedelta(days=policy.time_window_days - 1), first_partition), policy


def _insufficient(found: int, counted: str, first: date, window: date, needed: int) -> str:
    return (f"insufficient feedback: {found} {counted} between {first} and {window}, fewer than "
            f"min_sample_size {needed}: {needed - found} more executions are needed")


def _run_partition(
    runner: LoopRunner, pattern_id: str, key: str, first: date, window: date, collect_period: bool, output
) -> tuple[set[str], list[str]]:
    """Runs the whole graph for (key, window), after collecting the period's earlier windows not
    collected yet when `collect_period`; returns (assets materialised in the last run, run ids)."""
    from feedback_loop_dagster.lib.collect.collector import first_uncollected_window

    run_ids: list[str] = []
    if collect_period:
        with runner.warehouse.connect() as conn:
            start = first_uncollected_window(conn, pattern_id, first, window)
        if start < window:
            # Only collect the earlier windows: running the later stages on them would start
            # experiments in windows whose traffic was never split between the arms.
            _, run_ids = runner.materialize([key], start, window - timedelta(days=1), only=["feedback_dataset"])
            output.metadata["collected_windows"] = [start.isoformat(), (window - timedelta(days=1)).isoformat()]
    done, ids = runner.materialize([key], window, window)
    return done, run_ids + ids


def _stage_states(done: set[str], outcomes: dict, failures: list) -> dict[str, str]:
    """Each stage's state in the output contract, from the outcomes the stages recorded."""
    states = {}
    for asset, stage in STAGE_OF_ASSET.items():
        if asset in done and asset in outcomes:
            states[stage] = STAGE_STATES[outcomes[asset].status]
        else:  # not materialised: its step failed, or did not run after a failed one
            states[stage] = "failed" if any(f.stage == asset for f in failures) else "skipped"
    return states


def _report_outcome(output, outcome, first: date, window: date, needed: int) -> bool:
    """Fills the output contract from the loop's outcome; whether it analysed `needed` executions."""
    for name in LoopReport.model_fields:  # the figures the output shares with the report
        if name != "warnings":
            setattr(output, name, getattr(outcome, name))
    output.warnings += outcome.warnings
    if outcome.executions_analyzed >= needed:
        return True
    counted = f"valid executions of {output.pattern_id!r}"
    output.warnings.append(_insufficient(outcome.executions_analyzed, counted, first, window, needed))
    return False


def run_loop(
    runner: LoopRunner,
    pattern_id: str,
    window: date | None = None,
    contract: ModelFeedbackLoopInput | None = None,
    collect_period: bool = True,
    gate_on_samples: bool = True,
    correlation_id: UUID | None = None,
) -> ModelFeedbackLoopOutput:
    """The loop for one pattern and window, reported as the original output contract.

    With `contract`, its policy fields first become the pattern's stored policy. The analysis
    period is the `time_window_days` windows ending at `window`. With `collect_period`, the
    period's earlier windows not collected yet are first collected (one range run of
    `feedback_dataset`, what the sensor would have done); then the whole graph runs for the
    partition (pattern, window). With `gate_on_samples`, fewer executions in the source than
    `min_sample_size` stop before any run, and fewer valid ones after it make success=False;
    either way a warning says how many executions are missing. Errors of the run are reported
    in the output (success=False), never raised; only bad input raises ValueError.
    """
    from feedback_loop_dagster.defs.in_process_runs.failures import run_failures
    from feedback_loop_dagster.lib.collect.source import count_executions
    from feedback_loop_dagster.lib.partition_status import stage_outcomes
    from feedback_loop_dagster.lib.registry.policies import set_policy
    from feedback_loop_dagster.lib.report import loop_outcome
    from feedback_loop_dagster.lib.storage.migrations import init_databases

    started = time.perf_counter()
    correlation_id = correlation_id or (contract.correlation_id if contract else uuid4())
    stages = dict.fromkeys(WORKFLOW_STAGES, "skipped")
    output = ModelFeedbackLoopOutput(success=False, pattern_id=pattern_id, correlation_id=correlation_id,
                                     workflow_stages=stages)

    def finish(success: bool) -> ModelFeedbackLoopOutput:
        output.success = success and not output.errors
        output.workflow_stages = stages
        output.duration_ms = round((time.perf_counter() - started) * 1000.0, 3)
        output.timestamp = datetime.now(UTC)
        return output

    try:
        warehouse, source = runner.warehouse, runner.source
        init_databases(warehouse, source)
        window, first, policy = _analysis_period(runner, pattern_id, window, contract)
        output.metadata.update(window=window.isoformat(), first_window=first.isoformat(), policy=policy.model_dump(mode="json"))
        needed = policy.min_sample_size
        in_source = count_executions(source, pattern_id, first, window)
        if gate_on_samples and in_source < needed:
            output.feedback_collected = in_source
            output.warnings.append(_insufficient(in_source, f"executions of {pattern_id!r} in hook_executions", first, window, needed))
            return finish(False)

        key = runner.register([pattern_id])[pattern_id]
        output.metadata["partition_key"] = key
        if contract is not None:
            with warehouse.begin() as conn:
                set_policy(conn, pattern_id, policy)
        done, run_ids = _run_partition(runner, pattern_id, key, first, window, collect_period, output)
        # Every window this call ran (the collected period too), one error per failed partition.
        ran = [(key, first + timedelta(days=d)) for d in range((window - first).days + 1)]
        failures = run_failures(runner.dagster_instance(), warehouse, run_ids, ran)
        output.errors += [failure.line() for failure in failures]
        with warehouse.connect() as conn:
            stages.update(_stage_states(done, stage_outcomes(conn, key, window), failures))
        with warehouse.connect() as conn:
            outcome = loop_outcome(conn, pattern_id, first, window, policy.time_window_days)
        enough = _report_outcome(output, outcome, first, window, needed)
        output.metadata.update(run_ids=run_ids, **outcome.details)
        return finish(enough or not gate_on_samples)
    except ValueError:
        raise
    except Exception as exc:  # a failed run or an unusable database: reported, not raised
        log.exception("feedback loop for %r failed", pattern_id)
        output.errors.append(f"{type(exc).__name__}: {exc}")
        return finish(False)


class NodeFeedbackLoopOrchestrator:
    """The original design's orchestrator: `await execute_orchestration(contract)`.

    `database_url` / `source_url` default to FEEDBACK_LOOP_DATABASE_URL / FEEDBACK_LOOP_SOURCE_URL,
    `instance` to the Dagster instance in $DAGSTER_HOME, `now` (the moment the loop acts at,
    for replays of past days) to the real clock. `lineage_graph` answers traversal questions
    (get_ancestors, get_descendants, get_lineage_path, get_active, diff) on the registry the
    runs update.
    """

    def __init__(
        self,
        database_url: str | None = None,
        source_url: str | None = None,
        instance: Any = None,
        now: datetime | None = None,
    ) -> None:
        self.runner = LoopRunner(database_url=database_url, source_url=source_url, instance=instance, now=now)
        self.logger = logging.getLogger("NodeFeedbackLoopOrchestrator")

    @property
    def lineage_graph(self):
        from feedback_loop_dagster.lib.lineage import Lineage

        return Lineage(self.runner.warehouse)

    async def execute_orchestration(self, contract: ModelFeedbackLoopInput) -> ModelResult:
        if isinstance(contract, dict):
            contract = ModelFeedbackLoopInput(**contract)
        if not isinstance(contract, ModelFeedbackLoopInput):
            raise ValueError(f"contract must be a ModelFeedbackLoopInput, got {type(contract).__name__}")
        output = await asyncio.to_thread(
            run_loop, self.runner, contract.pattern_id, contract.window, contract,
        )
        data = output.model_dump(mode="json")
        error = "; ".join(output.errors) or (None if output.success else "; ".join(output.warnings) or "the loop did not succeed")
        return ModelResult(
            success=output.success,
            data=data,
            error=error,
            metadata={"correlation_id": str(output.correlation_id), "duration_ms": output.duration_ms,
                      "window": output.metadata.get("window")},
        )
