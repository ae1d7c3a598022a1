"""The Dagster layer: one folder per stage of the loop (collect, analyze, propose, experiment,
validate, apply, lineage, health) with its assets, checks and sensors; `code_location/` (partitions,
resources, job, schedule), `per_partition/` (what the stages share) and `in_process_runs/`
(runs launched by the CLI, the demo and the Python API). `feedback_loop_dagster.definitions`
puts them together."""

import warnings

import dagster as dg

# The loop relies on two Dagster APIs that 1.13 marks beta: `backfill_policy` on its assets (a
# backfill is a few range runs, not a run per partition) and dagster-pandera's schema metadata on
# `feedback_dataset`. Their warnings speak to the project's authors, who pin dagster==1.13.27 and
# test both, not to the people running it; they are silenced here, before any asset is defined,
# by their exact text. Every other beta or preview warning still shows.
for _api in ("Parameter `backfill_policy` of function `asset`", "Function `pandera_schema_to_dagster_type`"):
    warnings.filterwarnings("ignore", message=f"{_api} is currently in beta", category=dg.BetaWarning)
