"""Table definitions: the source contract (DESIGN.md section 2) and the warehouse.

These are the current shapes. Migrations (migrations.py) bring any older database up to them.
"""

from __future__ import annotations

import sqlalchemy as sa

from feedback_loop_dagster.lib.settings import SOURCE_TABLE
from feedback_loop_dagster.lib.storage.json_text import JSONText

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real BIGINT identity.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)

source_metadata = sa.MetaData()

hook_executions = sa.Table(
    SOURCE_TABLE,
    source_metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
    sa.Column("execution_id", sa.Text, nullable=False, unique=True),
    sa.Column("pattern_id", sa.Text, nullable=False),
    sa.Column("pattern_version", sa.Text),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("completed_at", Timestamp),
    sa.Column("duration_ms", sa.Float),
    sa.Column("status", sa.Text),
    sa.Column("quality_score", sa.Float),
    sa.Column("quality_results", sa.Text),
    sa.Column("performance_score", sa.Float),
    sa.Column("user_rating", sa.Float),
    sa.Column("retry_count", sa.Integer, server_default="0"),
    sa.Column("error_type", sa.Text),
    sa.Column("error_message", sa.Text),
    sa.Column("unit_id", sa.Text),
    sa.Index("ix_hook_executions_pattern_started", "pattern_id", "started_at"),
)

# Columns the collector cannot work without; the others may be absent from a user's view.
REQUIRED_SOURCE_COLUMNS = ("seq", "execution_id", "pattern_id", "started_at", "status")

warehouse_metadata = sa.MetaData()

schema_migrations = sa.Table(
    "feedback_loop_migrations",
    warehouse_metadata,
    sa.Column("component", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("applied_at", Timestamp, nullable=False),
)

# Every known pattern, with its key in the `patterns` partition dimension (identity when the id
# is already a safe key).
patterns = sa.Table(
    "patterns",
    warehouse_metadata,
    sa.Column("pattern_id", sa.Text, primary_key=True),
    sa.Column("partition_key", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
)

_execution_columns = (
    ("pattern_version", sa.Text),
    ("started_at", Timestamp),
    ("completed_at", Timestamp),
    ("duration_ms", sa.Float),
    ("status", sa.Text),
    ("quality_score", sa.Float),
    ("performance_score", sa.Float),
    ("user_rating", sa.Float),
    ("retry_count", sa.Integer),
    ("error_type", sa.Text),
    ("error_message", sa.Text),
    ("unit_id", sa.Text),
)

feedback = sa.Table(
    "feedback",
    warehouse_metadata,
    sa.Column("pattern_key", sa.Text, primary_key=True),
    sa.Column("window_start", sa.Date, primary_key=True),
    sa.Column("execution_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("pattern_id", sa.Text, nullable=False),
    *(sa.Column(name, type_) for name, type_ in _execution_columns),
)

feedback_quarantine = sa.Table(
    "feedback_quarantine",
    warehouse_metadata,
    sa.Column("pattern_key", sa.Text, nullable=False),
    sa.Column("window_start", sa.Date, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("execution_id", sa.Text),
    sa.Column("pattern_id", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
    sa.Index("ix_feedback_quarantine_partition", "pattern_key", "window_start"),
)

# One row per collected (pattern, window): the accounting that the validity check reads and
# that downstream stages use to skip partitions whose feedback failed validation.
feedback_partitions = sa.Table(
    "feedback_partitions",
    warehouse_metadata,
    sa.Column("pattern_key", sa.Text, primary_key=True),
    sa.Column("window_start", sa.Date, primary_key=True),
    sa.Column("pattern_id", sa.Text, nullable=False),
    sa.Column("source_rows", sa.Integer, nullable=False),
    sa.Column("valid_rows", sa.Integer, nullable=False),
    sa.Column("quarantined_rows", sa.Integer, nullable=False),
    sa.Column("max_seq", sa.BigInteger),
    sa.Column("collected_at", Timestamp, nullable=False),
)

# Each partition's outcome at each stage of the loop (lib/partition_status.py): ok, failed with
# why, or skipped because an earlier stage failed it (migration 4).
partition_status = sa.Table(
    "partition_status",
    warehouse_metadata,
    sa.Column("pattern_key", sa.Text, primary_key=True),
    sa.Column("window_start", sa.Date, primary_key=True),
    sa.Column("stage", sa.Text, primary_key=True),
    sa.Column("pattern_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # ok | failed | skipped
    sa.Column("reason", sa.Text),
    sa.Column("run_id", sa.Text),
    sa.Column("updated_at", Timestamp, nullable=False),
)

# --- The improvement loop (DESIGN.md sections 1, 3 and 4) -----------------------------------

# JSON documents are TEXT on both databases (json_text.py), each column with the encoding
# (`sort_keys`, `default`) its writers have always used, so new documents are written as before.

# Immutable versions of a pattern. `version` is the name executions carry in pattern_version;
# executions without one belong to the implicit first version.
pattern_versions = sa.Table(
    "pattern_versions",
    warehouse_metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("pattern_id", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("parent_id", sa.BigInteger, sa.ForeignKey("pattern_versions.id")),
    sa.Column("config", JSONText(sort_keys=True), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),  # implicit | observed | proposal | manual
    sa.Column("proposal_id", sa.BigInteger),
    sa.UniqueConstraint("pattern_id", "version", name="uq_pattern_versions_name"),
)

# Movable pointers (`active`, `candidate`), like Langfuse labels or MLflow aliases.
pattern_labels = sa.Table(
    "pattern_labels",
    warehouse_metadata,
    sa.Column("pattern_id", sa.Text, primary_key=True),
    sa.Column("label", sa.Text, primary_key=True),
    sa.Column("version_id", sa.BigInteger, sa.ForeignKey("pattern_versions.id"), nullable=False),
    sa.Column("evidence_window", sa.Date),  # the window whose evidence last moved it
    sa.Column("updated_at", Timestamp, nullable=False),
)

pattern_policies = sa.Table(
    "pattern_policies",
    warehouse_metadata,
    sa.Column("pattern_id", sa.Text, primary_key=True),
    sa.Column("policy", JSONText(), nullable=False),  # a Policy, as its model_dump_json()
    sa.Column("updated_at", Timestamp, nullable=False),
)

DAILY_STAT_COLUMNS = (
    "executions",
    "success_n",
    "success_count",
    "latency_n",
    "latency_log_sum",
    "latency_log_sum_sq",
    "quality_n",
    "quality_sum",
    "quality_sum_sq",
    "rating_n",
    "rating_sum",
    "rating_sum_sq",
    "retries_n",
    "retries_sum",
    "retries_sum_sq",
)

# Mergeable sufficient statistics per pattern version and day (lib/stats/sufficient.py), so
# trailing metrics and cumulative A/B results add days instead of rescanning executions.
daily_version_stats = sa.Table(
    "daily_version_stats",
    warehouse_metadata,
    sa.Column("pattern_id", sa.Text, primary_key=True),
    sa.Column("version", sa.Text, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("pattern_key", sa.Text, nullable=False),
    # Column names are the keys of ArmStats.from_aggregates, so a SUM(...) GROUP BY row feeds it.
    sa.Column("executions", sa.Integer, nullable=False),
    sa.Column("success_n", sa.Integer, nullable=False),
    sa.Column("success_count", sa.Integer, nullable=False),
    *(
        sa.Column(name, sa.Integer if name.endswith("_n") else sa.Float, nullable=False)
        for name in DAILY_STAT_COLUMNS[3:]
    ),
    sa.Column("error_counts", JSONText(sort_keys=True), nullable=False),
)

pattern_metrics = sa.Table(
    "pattern_metrics",
    warehouse_metadata,
    sa.Column("pattern_key", sa.Text, primary_key=True),
    sa.Column("window_start", sa.Date, primary_key=True),
    sa.Column("version", sa.Text, primary_key=True),
    sa.Column("pattern_id", sa.Text, nullable=False),
    sa.Column("period_start", sa.Date, nullable=False),
    sa.Column("executions", sa.Integer, nullable=False),
    sa.Column("success_rate", sa.Float),
    sa.Column("latency_p50", sa.Float),
    sa.Column("latency_p95", sa.Float),
    sa.Column("latency_p99", sa.Float),
    sa.Column("latency_geomean", sa.Float),
    sa.Column("quality_mean", sa.Float),
    sa.Column("rating_mean", sa.Float),
    sa.Column("retries_mean", sa.Float),
    sa.Column("top_errors", JSONText(), nullable=False),  # most frequent first: key order is meaning
    sa.Column("comparison", JSONText(sort_keys=True), nullable=False),  # per metric vs the previous period
    sa.Column("regressions", JSONText(), nullable=False),  # metrics whose decline is significant
)

proposals = sa.Table(
    "proposals",
    warehouse_metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("pattern_id", sa.Text, nullable=False),
    sa.Column("window_start", sa.Date, nullable=False),
    sa.Column("analyzer", sa.Text, nullable=False),
    sa.Column("base_version_id", sa.BigInteger, sa.ForeignKey("pattern_versions.id"), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),  # reliability | performance | quality | ...
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("expected_delta", sa.Float, nullable=False),
    sa.Column("expected_delta_low", sa.Float, nullable=False),
    sa.Column("expected_delta_high", sa.Float, nullable=False),
    sa.Column("risk", sa.Text, nullable=False),
    sa.Column("priority", sa.Float, nullable=False),
    sa.Column("evidence", JSONText(default=float), nullable=False),
    sa.Column("patch", JSONText()),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # open | experimenting | applied | rejected | superseded
    sa.Column("last_seen_window", sa.Date, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(
        "uq_proposals_open",
        "pattern_id",
        "fingerprint",
        unique=True,
        sqlite_where=sa.text("status IN ('open', 'experimenting')"),
        postgresql_where=sa.text("status IN ('open', 'experimenting')"),
    ),
)

experiments = sa.Table(
    "experiments",
    warehouse_metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("pattern_id", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),  # ab (candidate vs active) | watch (after a promotion)
    sa.Column("control_version_id", sa.BigInteger, sa.ForeignKey("pattern_versions.id"), nullable=False),
    sa.Column("treatment_version_id", sa.BigInteger, sa.ForeignKey("pattern_versions.id"), nullable=False),
    sa.Column("proposal_id", sa.BigInteger),
    sa.Column("traffic_split", sa.Float, nullable=False),  # planned treatment share
    sa.Column("policy", JSONText(), nullable=False),  # the Policy snapshot
    sa.Column("start_window", sa.Date, nullable=False),  # first window whose executions count
    sa.Column("status", sa.Text, nullable=False),  # running | concluded | stopped
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("concluded_window", sa.Date),
    sa.Column("outcome", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Index(
        "uq_experiments_running",
        "pattern_id",
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    ),
)

ab_results = sa.Table(
    "ab_results",
    warehouse_metadata,
    sa.Column("experiment_id", sa.BigInteger, sa.ForeignKey("experiments.id"), primary_key=True),
    sa.Column("window_start", sa.Date, primary_key=True),
    sa.Column("pattern_id", sa.Text, nullable=False),
    sa.Column("decision", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("p_value", sa.Float, nullable=False),
    sa.Column("confidence_score", sa.Float, nullable=False),
    sa.Column("performance_delta", sa.Float),
    sa.Column("control_n", sa.Integer, nullable=False),
    sa.Column("treatment_n", sa.Integer, nullable=False),
    sa.Column("srm_p_value", sa.Float),
    sa.Column("result", JSONText(), nullable=False),
    sa.Column("computed_at", Timestamp, nullable=False),
)

# What the loop did about an experiment; at most one per experiment, so concurrent or repeated
# runs act once.
decisions = sa.Table(
    "decisions",
    warehouse_metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("experiment_id", sa.BigInteger, sa.ForeignKey("experiments.id"), nullable=False, unique=True),
    sa.Column("pattern_id", sa.Text, nullable=False),
    sa.Column("window_start", sa.Date, nullable=False),
    sa.Column("action", sa.Text, nullable=False),  # apply | reject | rollback | keep
    sa.Column("status", sa.Text, nullable=False),  # done | pending_review | dismissed
    sa.Column("from_version_id", sa.BigInteger, sa.ForeignKey("pattern_versions.id")),
    sa.Column("to_version_id", sa.BigInteger, sa.ForeignKey("pattern_versions.id")),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("evidence", JSONText(default=str), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("decided_by", sa.Text, nullable=False),
)

lineage_edges = sa.Table(
    "lineage_edges",
    warehouse_metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("pattern_id", sa.Text, nullable=False),
    sa.Column("from_version_id", sa.BigInteger, sa.ForeignKey("pattern_versions.id"), nullable=False),
    sa.Column("to_version_id", sa.BigInteger, sa.ForeignKey("pattern_versions.id"), nullable=False),
    sa.Column("edge_type", sa.Text, nullable=False),
    sa.Column("decision_id", sa.BigInteger, sa.ForeignKey("decisions.id")),
    sa.Column("evidence", JSONText(sort_keys=True, default=str), nullable=False),
    sa.Column("window_start", sa.Date),
    sa.Column("created_at", Timestamp, nullable=False),
)

# Lineage traversal and the write-time cycle check walk edges from either end and versions by
# parent (migration 3).
LINEAGE_INDEXES = (
    sa.Index("ix_lineage_edges_from", lineage_edges.c.from_version_id),
    sa.Index("ix_lineage_edges_to", lineage_edges.c.to_version_id),
    sa.Index("ix_pattern_versions_parent", pattern_versions.c.parent_id),
)

# What the loop records about its own data, by name (migration 4). `first_window`: the first UTC
# day with executions (ISO date), where the daily partitions start (lib/partition_start.py).
loop_settings = sa.Table(
    "loop_settings",
    warehouse_metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)
