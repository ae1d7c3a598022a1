"""Table definitions: the source contract (DESIGN.md section 2) and the warehouse.

These are the current shapes. Migrations (migrations.py) bring any older database up to them.
"""

from __future__ import annotations

import sqlalchemy as sa

from feedback_loop_dagster.lib.settings import SOURCE_TABLE

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
