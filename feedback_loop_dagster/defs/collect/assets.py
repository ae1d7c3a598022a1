"""`feedback_dataset`: each pattern's executions per window, normalised, validated, quarantined."""

from collections import Counter

import dagster as dg
import pandas as pd
from dagster_pandera import pandera_schema_to_dagster_type
from pydantic import Field

from feedback_loop_dagster.defs.code_location.partitions import pattern_window_partitions
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.per_partition.checks import PartitionCheck, partition_check_events, partition_check_spec
from feedback_loop_dagster.defs.per_partition.loop import Outcome, Partition, record_stage, run_partitions
from feedback_loop_dagster.defs.per_partition.metadata import report_partitions, table_metadata
from feedback_loop_dagster.lib.collect.collector import PartitionCounts, collect_feedback
from feedback_loop_dagster.lib.collect.schema import FeedbackSchema
from feedback_loop_dagster.lib.partition_status import FAILED, OK
from feedback_loop_dagster.lib.registry.policies import get_policies

hook_executions = dg.AssetSpec(
    "hook_executions",
    description="Traces of every pattern execution (the source table, DESIGN.md section 2).",
    group_name="collect",
    kinds={"sql"},
)

STAGE = "feedback_dataset"
VALIDITY_CHECK = "feedback_validity_share"
PREVIEW_COLUMNS_DROPPED = ["pattern_key", "pattern_id", "window_start"]


class FeedbackDatasetConfig(dg.Config):
    max_invalid_share: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description=(
            "Largest share of quarantined rows a partition may have, for every pattern of this run; "
            "default (null): each pattern's policy (`max_invalid_share`, 5% unless set with "
            "`feedback-loop policies set PATTERN --set max_invalid_share=0.2`)."
        ),
    )


@dg.asset(
    deps=[hook_executions],
    partitions_def=pattern_window_partitions,
    # A range of partitions runs as one set-based pass over the source.
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="collect",
    kinds={"pandas", "sql"},
    metadata={"dagster/column_schema": pandera_schema_to_dagster_type(FeedbackSchema).metadata["schema"]},
    check_specs=[
        partition_check_spec(
            VALIDITY_CHECK,
            "feedback_dataset",
            "Fails a partition whose share of quarantined rows exceeds max_invalid_share (the run's config, "
            "else the pattern's policy); every later stage skips that partition, the rest of the run goes on.",
        )
    ],
)
def feedback_dataset(context: dg.AssetExecutionContext, config: FeedbackDatasetConfig, databases: FeedbackDatabases):
    """Valid executions of a pattern in a window, in the warehouse table `feedback`.

    Rows that fail FeedbackSchema go to `feedback_quarantine` with a reason; valid + quarantined
    always equals the source rows of the partition. Re-materialising replaces the partition.
    Each partition shows its own counts, reasons and first rows.
    """
    warehouse = databases.warehouse
    partitions = {p.pair: p for p in run_partitions(context, warehouse)}
    report = collect_feedback(databases.source, warehouse, list(partitions))
    with warehouse.begin() as conn:
        policies = get_policies(conn, {p.pattern_id for p in partitions.values()})
        outcomes = [
            _verdict(partitions[(c.pattern_key, c.window_start)], c, _threshold(config, policies[c.pattern_id]))
            for c in report.partitions
        ]
        record_stage(conn, context, STAGE, outcomes)
    report_partitions(context, outcomes, _figures)
    yield dg.MaterializeResult()
    yield from partition_check_events(context, VALIDITY_CHECK, (_check(o) for o in outcomes))


def _threshold(config: FeedbackDatasetConfig, policy) -> float:
    # The run's config, when set, overrides the pattern's policy (e.g. a backfill over history
    # that tolerates more malformed rows than the live loop).
    return policy.max_invalid_share if config.max_invalid_share is None else config.max_invalid_share


def _verdict(partition: Partition, counts: PartitionCounts, threshold: float) -> Outcome[tuple[PartitionCounts, float]]:
    if counts.invalid_share <= threshold:
        return Outcome(partition, OK, value=(counts, threshold))
    top = ", ".join(f"{reason} ({n})" for reason, n in counts.reasons.most_common(2))
    reason = (
        f"{counts.invalid_share:.1%} of rows invalid ({counts.quarantined_rows} of {counts.source_rows}), "
        f"above max_invalid_share {threshold:.1%}; most common: {top}"
    )
    return Outcome(partition, FAILED, reason, value=(counts, threshold))


def _check(outcome: Outcome[tuple[PartitionCounts, float]]) -> PartitionCheck:
    counts, threshold = outcome.value
    return PartitionCheck(
        outcome.partition.dagster_key,
        outcome.ok,
        (f"{counts.invalid_share:.1%} of {counts.source_rows} rows invalid, within max_invalid_share {threshold:.1%}"
         if outcome.ok else f"{outcome.reason}: later stages skip this partition"),
        {"invalid_share": round(counts.invalid_share, 4), "max_invalid_share": threshold,
         "quarantined_rows": counts.quarantined_rows, "source_rows": counts.source_rows},
    )


def _figures(outcome: Outcome) -> dict:
    counts, threshold = outcome.value
    figures = {
        "dagster/row_count": counts.valid_rows,
        "source_rows": counts.source_rows,
        "valid_rows": counts.valid_rows,
        "quarantined_rows": counts.quarantined_rows,
        "invalid_share": round(counts.invalid_share, 4),
        "max_invalid_share": threshold,
        "preview": table_metadata(counts.preview_valid.drop(columns=PREVIEW_COLUMNS_DROPPED, errors="ignore")),
    }
    if counts.quarantined_rows:
        figures["invalid_by_reason"] = table_metadata(_reason_table(counts.reasons))
        figures["quarantine_preview"] = table_metadata(
            counts.preview_quarantined[["execution_id", "reason", "details"]]
        )
    return figures


def _reason_table(reasons: Counter) -> pd.DataFrame:
    return pd.DataFrame(reasons.most_common(), columns=["reason", "rows"])
