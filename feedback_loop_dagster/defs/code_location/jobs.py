"""Jobs over the loop's assets."""

from __future__ import annotations

import dagster as dg

# Runs carry their pattern partition key in this tag so the run queue can allow one run per pattern.
PATTERN_TAG = "feedback_loop/pattern"
# Range runs over several patterns (the daily schedule, history backfills) carry this tag instead;
# dagster.yaml limits how many run at once.
BATCH_TAG = "feedback_loop/batch"

feedback_loop_job = dg.define_asset_job(
    "feedback_loop_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets("hook_executions"),
    description="The feedback loop for one (pattern, window) partition or a range of them.",
)
