"""`feedback_dataset`: each pattern's executions per window, normalised, validated, quarantined."""

import dagster as dg
import pandas as pd
from dagster_pandera import pandera_schema_to_dagster_type
from pydantic import Field

from feedback_loop_dagster.defs.metadata import table_metadata
from feedback_loop_dagster.defs.partitions import pattern_window_partitions, run_partition_pairs
from feedback_loop_dagster.defs.resources import FeedbackDatabases
from feedback_loop_dagster.lib.collect.collector import collect_feedback
from feedback_loop_dagster.lib.collect.schema import FeedbackSchema

hook_executions = dg.AssetSpec(
    "hook_executions",
    description="Traces of every pattern execution (the source table, DESIGN.md section 2).",
    group_name="source",
    kinds={"sql"},
)

VALIDITY_CHECK = "feedback_validity_share"


class FeedbackDatasetConfig(dg.Config):
    max_invalid_share: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Largest share of quarantined rows a partition may have."
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
        dg.AssetCheckSpec(
            VALIDITY_CHECK,
            asset="feedback_dataset",
            blocking=True,
            description="Fails when a partition's share of quarantined rows exceeds max_invalid_share.",
        )
    ],
)
def feedback_dataset(
    context: dg.AssetExecutionContext, config: FeedbackDatasetConfig, databases: FeedbackDatabases
) -> dg.MaterializeResult:
    """Valid executions of a pattern in a window, in the warehouse table `feedback`.

    Rows that fail FeedbackSchema go to `feedback_quarantine` with a reason; valid + quarantined
    always equals the source rows of the partition. Re-materialising replaces the partition.
    """
    report = collect_feedback(databases.source, databases.warehouse, run_partition_pairs(context))
    partitions = pd.DataFrame(
        [
            {
                "pattern_id": p.pattern_id,
                "window": p.window_start.isoformat(),
                "source_rows": p.source_rows,
                "valid_rows": p.valid_rows,
                "quarantined_rows": p.quarantined_rows,
                "invalid_share": round(p.invalid_share, 4),
            }
            for p in report.partitions
        ]
    )
    failing = partitions[partitions["invalid_share"] > config.max_invalid_share]
    reasons = pd.DataFrame(report.reasons.most_common(), columns=["reason", "rows"])
    context.log.info(
        f"{len(report.partitions)} partition(s): {report.valid_rows} valid, "
        f"{report.quarantined_rows} quarantined of {report.source_rows} source rows"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": report.valid_rows,
            "partitions": len(report.partitions),
            "source_rows": report.source_rows,
            "valid_rows": report.valid_rows,
            "quarantined_rows": report.quarantined_rows,
            "invalid_share": round(report.quarantined_rows / report.source_rows, 4) if report.source_rows else 0.0,
            "invalid_by_reason": table_metadata(reasons),
            "partition_counts": table_metadata(partitions.sort_values("invalid_share", ascending=False)),
            "preview": table_metadata(report.preview_valid.drop(columns=["pattern_key"], errors="ignore")),
            "quarantine_preview": table_metadata(
                report.preview_quarantined[["pattern_id", "window_start", "execution_id", "reason", "details"]]
                if not report.preview_quarantined.empty
                else report.preview_quarantined
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=VALIDITY_CHECK,
                passed=failing.empty,
                description=(
                    f"every partition has at most {config.max_invalid_share:.1%} invalid rows"
                    if failing.empty
                    else f"{len(failing)} partition(s) exceed {config.max_invalid_share:.1%} invalid rows"
                ),
                metadata={
                    "max_invalid_share": config.max_invalid_share,
                    "worst_invalid_share": float(partitions["invalid_share"].max()) if len(partitions) else 0.0,
                    "failing_partitions": table_metadata(failing),
                },
            )
        ],
    )
