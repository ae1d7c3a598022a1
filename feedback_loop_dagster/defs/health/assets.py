"""`loop_health`: how well the loop improves each pattern, and all of them, as of the window's end.

Partitioned like every stage (pattern x window), last in the job: every run, schedule, sensor
request, backfill and demo day computes it with the decisions it just took, and partition (p, w)
reads "pattern p's health as of the end of w". Read-only: it computes from the experiments,
decisions and A/B results (lib/report/health.py); the CLI's `feedback-loop health` computes the
same from the same core.
"""


from datetime import date, timedelta

import dagster as dg
import pandas as pd

from feedback_loop_dagster.defs.code_location.partitions import partition_key, pattern_window_partitions, run_partition_pairs
from feedback_loop_dagster.defs.code_location.resources import FeedbackDatabases
from feedback_loop_dagster.defs.health.plot import health_plot_markdown
from feedback_loop_dagster.defs.lineage.assets import pattern_lineage
from feedback_loop_dagster.defs.per_partition.metadata import add_partition_metadata, table_metadata
from feedback_loop_dagster.defs.per_partition.plots import markdown_text
from feedback_loop_dagster.lib.report.health import (
    ACCURACY_TARGET,
    FALSE_POSITIVE_TARGET,
    Health,
    HealthHistory,
    health_as_of,
    health_over_time,
    health_report,
    health_row,
    load_history,
)
from feedback_loop_dagster.lib.storage.partition_key_map import partition_keys_by_id, pattern_ids_for_keys

# Patterns listed in each partition's `loop` table (`feedback-loop health` lists every one).
LOOP_TABLE_PATTERNS = 50
DEFINITIONS = (
    f"**accuracy**: promotions confirmed by their watch (target > {ACCURACY_TARGET:.0%}); **false positives**: "
    f"promotions rolled back (target < {FALSE_POSITIVE_TARGET:.0%}); the rest are under watch. **mean effect**: the "
    "lead metric's effect at promotion (treatment - control, in its unit), per metric. **rejection rate**: rejected / "
    "A/B experiments ended with a verdict. **running**: A/B experiments open at the window's end."
)


def _figures(health: Health) -> dict[str, dg.MetadataValue]:
    """The numbers Dagster can plot across materializations (rates only where defined)."""
    figures: dict[str, dg.MetadataValue] = {
        name: dg.MetadataValue.int(getattr(health, name))
        for name in ("promotions", "confirmed", "rolled_back", "under_watch", "rejected", "inconclusive", "running",
                     "pending_review")
    }
    for name in ("improvement_accuracy", "false_positive_rate", "rejection_rate"):
        if getattr(health, name) is not None:
            figures[name] = dg.MetadataValue.float(round(getattr(health, name), 4))
    return figures


def _activity(health: Health) -> int:
    return health.promotions + health.ab_ended + health.stopped + health.running + health.pending_review


def loop_table(history: HealthHistory, window: date, keys: dict[str, str]) -> dg.TableMetadataValue:
    """The loop's health as of `window`, then each pattern's (the most active first, at most
    LOOP_TABLE_PATTERNS), with its partition key: the UI's map from hashed keys to ids."""
    per_pattern, overall = health_report(history, window)
    per_pattern.sort(key=lambda h: (-_activity(h), h.pattern_id))
    rows = []
    for h in [overall, *per_pattern]:
        row = health_row(h)  # the id and its key side by side, then the figures
        rows.append({"pattern": row.pop("pattern"), "partition_key": keys.get(h.pattern_id, "-"), **row})
    return table_metadata(pd.DataFrame(rows), limit=1 + LOOP_TABLE_PATTERNS)


def health_metadata(history: HealthHistory, pattern_id: str, window: date, loop_view: dict[str, dg.MetadataValue],
                    with_plot: bool) -> dict[str, dg.MetadataValue]:
    """Partition (pattern_id, window): its figures, its row, its plot over time (`with_plot`), and
    `loop_view` (every pattern's health as of the window, the same for the window's partitions)."""
    health = health_as_of(history, window, pattern_id)
    row = health_row(health)
    own = "| " + " | ".join(row) + " |\n|" + "---|" * len(row) + "\n| " + " | ".join(map(markdown_text, row.values())) + " |"
    metadata = {"pattern_id": dg.MetadataValue.text(pattern_id), "health": dg.MetadataValue.md(own)}
    if with_plot:
        series = health_over_time(history, window, pattern_id)
        metadata["over_time"] = dg.MetadataValue.md(health_plot_markdown(f"{pattern_id}: loop health as of {window}", series))
    # what a person reads first, then the numbers Dagster plots across materializations
    return {**metadata, **loop_view, **_figures(health)}


def loop_view(history: HealthHistory, window: date, keys: dict[str, str], with_plot: bool) -> dict[str, dg.MetadataValue]:
    view = {"loop": loop_table(history, window, keys), "definitions": dg.MetadataValue.md(DEFINITIONS)}
    if with_plot:
        series = health_over_time(history, window)
        view["loop_over_time"] = dg.MetadataValue.md(health_plot_markdown(f"all patterns: loop health as of {window}", series))
    return view


# The daily schedule (defs/code_location/schedules.py, 00:30 UTC) closes the loop for the window that ended at
# midnight. `loop_health` is the loop's last stage, so by 03:00 UTC it must have materialized since
# midnight, or the loop did not close for the latest window. Dagster evaluates the policy per asset,
# not per partition (dagster discussion #34023): a range run of old windows after midnight counts
# too. The daemon evaluates it when the instance enables freshness (dagster.yaml `freshness:`).
LATEST_WINDOW_FRESHNESS = dg.FreshnessPolicy.cron(deadline_cron="0 3 * * *", lower_bound_delta=timedelta(hours=3))


@dg.asset(
    deps=[pattern_lineage],
    partitions_def=pattern_window_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="track",
    kinds={"python", "sql"},
    freshness_policy=LATEST_WINDOW_FRESHNESS,
)
def loop_health(context: dg.AssetExecutionContext, databases: FeedbackDatabases) -> dg.MaterializeResult:
    """The loop's health as of the end of the window (the original design's Monitoring section),
    for the partition's pattern and for all patterns: improvement accuracy (promotions confirmed
    by their watch, target > 90%), false-positive rate (promotions rolled back, target < 5%), the
    mean effect of promotions in each lead metric's unit, days between improvements, rejection
    rate, and A/B experiments running, inconclusive and pending review; a plot of each over time.
    The `loop` table lists every pattern with its partition key (keys like
    `agent-planner-v2-be1c686d5091` stand for ids that are not safe keys).

    Plots are drawn for each pattern's latest window in a run (a backfill's older windows carry
    their figures and tables), so a long backfill does not spend its time drawing."""
    pairs = sorted(run_partition_pairs(context), key=lambda kw: (kw[1], kw[0]))
    ids = pattern_ids_for_keys(databases.warehouse, {k for k, _ in pairs})
    with databases.warehouse.connect() as conn:
        history = load_history(conn)
        keys = partition_keys_by_id(conn)
    last = pairs[-1][1]
    latest = {key: window for key, window in pairs}  # pairs run oldest first: each pattern's last window

    views: dict[date, dict[str, dg.MetadataValue]] = {}  # one loop view (and plot) per window

    def partition_metadata(key: str, window: date) -> dict[str, dg.MetadataValue]:
        if window not in views:
            views[window] = loop_view(history, window, keys, with_plot=window == last)
        return health_metadata(history, ids[key], window, views[window], with_plot=window == latest[key])

    # each partition's own metadata, in range runs too (at once: see add_partition_metadata)
    add_partition_metadata(context, {str(partition_key(key, window)): partition_metadata(key, window) for key, window in pairs})
    return dg.MaterializeResult()
