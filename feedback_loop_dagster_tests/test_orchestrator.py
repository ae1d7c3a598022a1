"""The original design's Python API on the real system: the output
contract (every field present and typed), numbers read back from what the assets wrote, a
promotion decided by the real A/B engine, asyncio.gather over patterns, and the error cases."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from uuid import UUID

import dagster as dg
import pytest
import sqlalchemy as sa

from feedback_loop_dagster import ModelFeedbackLoopInput, NodeFeedbackLoopOrchestrator
from feedback_loop_dagster.contracts import ModelFeedbackLoopOutput
from feedback_loop_dagster.defs.code_location.clock import midnight_after
from feedback_loop_dagster.lib.experiment.assignment import experiment_salt, in_treatment
from feedback_loop_dagster.lib.experiment.experiments import running_experiment
from feedback_loop_dagster.lib.registry.policies import get_policy
from feedback_loop_dagster.lib.registry.versions import register_version, set_label
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster_tests.factories import insert_executions, traffic

TODAY = datetime.now(UTC).date()
D1, D2, D3, D4 = (TODAY - timedelta(days=4 - i) for i in range(4))  # D4 is the latest complete window


def contract(pattern_id, **overrides):
    fields = dict(pattern_id=pattern_id, feedback_type="reliability", time_window_days=2, auto_apply_threshold=0.85,
                  min_sample_size=30, significance_level=0.1, enable_ab_testing=True)
    return ModelFeedbackLoopInput(**{**fields, **overrides})


TYPES = {
    "success": bool, "pattern_id": str, "feedback_collected": int, "executions_analyzed": int,
    "improvements_identified": int, "improvements_validated": int, "improvements_applied": int,
    "improvements_rejected": int, "performance_delta": float, "baseline_metrics": dict, "improved_metrics": dict,
    "confidence_score": float, "p_value": (float, type(None)), "statistically_significant": bool,
    "next_review_date": (str, type(None)), "workflow_stages": dict, "errors": list, "warnings": list,
    "correlation_id": str, "duration_ms": float,
}


def assert_contract(data):
    for name, kind in TYPES.items():
        assert name in data, name
        assert isinstance(data[name], kind), (name, data[name])
    assert set(data) >= set(ModelFeedbackLoopOutput.model_fields)
    assert all(isinstance(v, float) for m in ("baseline_metrics", "improved_metrics") for v in data[m].values())
    assert 0.0 <= data["confidence_score"] <= 1.0
    UUID(data["correlation_id"])
    if data["next_review_date"]:
        datetime.fromisoformat(data["next_review_date"])


@pytest.fixture
def orchestrator(engine, migrated_url):
    with engine.begin() as conn:
        for pattern_id in ("summarise", "translate"):
            v1 = register_version(conn, pattern_id, "v1", {"timeout_ms": 2000}, source="manual")
            set_label(conn, pattern_id, "active", v1.id, None)
    for i, day in enumerate((D1, D2)):
        insert_executions(engine, traffic("summarise", day, 300, seed=i) + traffic("translate", day, 300, seed=10 + i))
    with dg.instance_for_test() as instance:
        # Replays D2's run just after D2 closes, so its experiment starts on D3 (on the real
        # clock it would start today: D3 is complete and its traffic was not split).
        yield NodeFeedbackLoopOrchestrator(database_url=migrated_url, instance=instance, now=midnight_after(D2))


def test_the_loop_through_the_original_api_promotes_a_real_improvement(orchestrator, engine):
    async def both():
        return await asyncio.gather(
            orchestrator.execute_orchestration(contract("summarise", window=D2)),
            orchestrator.execute_orchestration(contract("translate", window=D2, enable_ab_testing=False)),
        )

    first, other = asyncio.run(both())
    for result in (first, other):
        assert result.success, (result.error, result.data["errors"])
        assert_contract(result.data)
        assert result.data["workflow_stages"] == dict.fromkeys(
            ("collect", "analyze", "propose", "experiment", "validate", "apply", "lineage"), "completed")
    data = first.data
    with engine.connect() as conn:
        source = conn.scalar(sa.select(sa.func.sum(tables.feedback_partitions.c.source_rows)).where(
            tables.feedback_partitions.c.pattern_id == "summarise"))
        policy = get_policy(conn, "summarise")
        experiment = running_experiment(conn, "summarise")
        assert running_experiment(conn, "translate") is None  # enable_ab_testing=False
    assert data["feedback_collected"] == source == 600 and data["executions_analyzed"] == 600
    assert data["improvements_identified"] >= 1
    assert any(o["patch"] == {"timeout_ms": 4000} for o in data["improvement_opportunities"])
    assert (policy.feedback_type, policy.min_sample_size, policy.significance_level, policy.time_window_days,
            policy.auto_apply_threshold) == ("reliability", 30, 0.1, 2, 0.85)
    assert data["baseline_metrics"]["executions"] == 600.0 and data["improved_metrics"] == {}
    # The proposal became a candidate derived from v1, tested from the next window.
    assert (experiment.control.version, experiment.treatment.version, experiment.start_window) == ("v1", "v2", D3)
    lineage = orchestrator.lineage_graph
    assert lineage.graph("summarise").node("v2").status == "candidate"
    assert [n.version for n in lineage.get_lineage_path("summarise@v2")] == ["v1", "v2"]
    assert lineage.diff("summarise@v1", "summarise@v2").patch == {"timeout_ms": 4000}

    def arms(units):
        treated = in_treatment(experiment_salt("summarise", experiment.id), units, experiment.traffic_split)
        return ["v2" if t else "v1" for t in treated]

    insert_executions(engine, traffic("summarise", D3, 500, seed=3, versions=arms) + traffic("summarise", D4, 500, seed=4, versions=arms))
    orchestrator.runner.now = midnight_after(D4)
    second = asyncio.run(orchestrator.execute_orchestration(contract("summarise")))  # latest complete window: D4
    data = second.data
    assert second.success, (second.error, data["errors"])
    assert_contract(data)
    # D3 is collected first (only collected: no stage runs on a window the sensor would have
    # handled), then the whole graph runs for D4.
    assert second.metadata["window"] == D4.isoformat() and data["metadata"]["collected_windows"] == [D3.isoformat()] * 2
    assert data["feedback_collected"] == 1000
    assert data["improvements_validated"] == 1 and data["improvements_applied"] == 1 and data["improvements_rejected"] == 0
    assert data["statistically_significant"] and data["p_value"] < 0.1 and data["confidence_score"] >= 0.85
    assert data["performance_delta"] > 0
    assert data["improved_metrics"]["success_rate"] > data["baseline_metrics"]["success_rate"]
    # A promoted version is watched against the one it replaced: reviewed again after the next window.
    assert data["next_review_date"] == datetime.combine(D4 + timedelta(days=2), datetime.min.time(), UTC).isoformat().replace("+00:00", "Z")
    graph = orchestrator.lineage_graph.graph("summarise")
    assert graph.get_active().version == "v2" and graph.node("v1").status == "deprecated"
    promoted = next(e for e in graph.edges if e.edge_type == "promoted_over")
    assert promoted.p_value == data["p_value"] and promoted.lift == data["performance_delta"]


def test_too_little_feedback_is_not_a_success_and_says_how_many_are_missing(engine, migrated_url):
    insert_executions(engine, traffic("tiny", D4, 12, seed=1))
    with dg.instance_for_test() as instance:
        orchestrator = NodeFeedbackLoopOrchestrator(database_url=migrated_url, instance=instance)
        result = asyncio.run(orchestrator.execute_orchestration(contract("tiny", time_window_days=7)))
        unknown = asyncio.run(orchestrator.execute_orchestration({"pattern_id": "nobody", "min_sample_size": 10}))
    assert not result.success and "18 more executions are needed" in result.error
    assert_contract(result.data)
    assert result.data["feedback_collected"] == 12
    assert any("12 executions of 'tiny'" in w and "18 more" in w for w in result.data["warnings"])
    assert set(result.data["workflow_stages"].values()) == {"skipped"}
    assert not unknown.success and "10 more executions are needed" in unknown.error


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"min_sample_size": 5}, "min_sample_size"),
        ({"significance_level": 0.5}, "significance_level"),
        ({"auto_apply_threshold": 1.5}, "auto_apply_threshold"),
        ({"time_window_days": 0}, "time_window_days"),
        ({"feedback_type": "speed"}, "feedback_type"),
        ({"pattern_id": ""}, "pattern_id"),
        ({"enable_ab_testing": "maybe"}, "enable_ab_testing"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_input_raises_value_error_naming_the_field(fields, named):
    with pytest.raises(ValueError, match=named):
        ModelFeedbackLoopInput(**{"pattern_id": "p", **fields})


def test_a_window_before_the_first_partition_is_a_value_error(engine, migrated_url):
    orchestrator = NodeFeedbackLoopOrchestrator(database_url=migrated_url, instance=dg.DagsterInstance.ephemeral())
    with pytest.raises(ValueError, match="before the first daily partition"):
        asyncio.run(orchestrator.execute_orchestration(contract("summarise", window=datetime(2001, 1, 1).date())))


def test_importing_the_package_stays_light():
    code = ("import sys, feedback_loop_dagster as f; f.ModelFeedbackLoopInput(pattern_id='p'); "
            "f.NodeFeedbackLoopOrchestrator; print('dagster' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
