"""JSON documents in TEXT columns (lib/storage/json_text.py): what SQLAlchemy writes and reads back,
what was stored before the columns were typed, and the bulk path that writes the text itself."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from feedback_loop_dagster.lib.registry.policies import get_policy, set_policy
from feedback_loop_dagster.lib.registry.versions import get_version, register_version
from feedback_loop_dagster.lib.stats import get_preset
from feedback_loop_dagster.lib.storage import tables
from feedback_loop_dagster.lib.storage.tables import DAILY_STAT_COLUMNS
from feedback_loop_dagster.lib.storage.writes import bulk_insert

pytestmark = pytest.mark.both_dialects

DOCUMENT = {"timeout_ms": 1500, "model": {"name": "small", "temperature": 0.25}, "stops": ["\n", "é"], "cache": None,
            "strict": True}


def _stored_text(conn, table: sa.Table, column: str) -> list[str]:
    """The column's TEXT as the database holds it (raw SQL: no type processing)."""
    return [text for (text,) in conn.exec_driver_sql(f"SELECT {column} FROM {table.name}")]


def test_a_document_round_trips_stored_as_its_writers_always_wrote_it(engine):
    with engine.begin() as conn:
        version = register_version(conn, "p", "v1", DOCUMENT)
        set_policy(conn, "p", get_preset("quality"))
    with engine.connect() as conn:
        assert get_version(conn, version.id).config == DOCUMENT
        assert get_policy(conn, "p") == get_preset("quality")
        assert _stored_text(conn, tables.pattern_versions, "config") == [json.dumps(DOCUMENT, sort_keys=True)]
        assert _stored_text(conn, tables.pattern_policies, "policy") == [get_preset("quality").model_dump_json()]


def test_text_stored_before_the_columns_were_typed_reads_back(engine):
    now = datetime.now(UTC)
    with engine.begin() as conn:
        # as the code wrote them by hand, json.dumps at each call site (NaN included)
        conn.execute(tables.pattern_versions.insert().values(
            pattern_id="p", version="v1", config=sa.literal(json.dumps(DOCUMENT, sort_keys=True), sa.Text),
            created_at=now, created_by="test", source="manual"))
        conn.execute(tables.pattern_policies.insert().values(
            pattern_id="p", policy=sa.literal(get_preset("quality").model_dump_json(), sa.Text), updated_at=now))
        (version_id,) = conn.execute(sa.select(tables.pattern_versions.c.id)).one()
        evidence = json.dumps({"p_value": float("nan"), "window": str(date(2026, 1, 1))}, sort_keys=True)
        conn.execute(tables.lineage_edges.insert().values(
            pattern_id="p", from_version_id=version_id, to_version_id=version_id, edge_type="derived_from",
            evidence=sa.literal(evidence, sa.Text), created_at=now))
    with engine.connect() as conn:
        assert get_version(conn, version_id).config == DOCUMENT
        assert get_policy(conn, "p") == get_preset("quality")
        evidence = conn.scalar(sa.select(tables.lineage_edges.c.evidence))
        assert math.isnan(evidence["p_value"]) and evidence["window"] == "2026-01-01"


def test_bulk_written_text_reads_back_as_the_document(engine):
    """bulk_insert bypasses the column type: the frame carries the text, on both databases."""
    counts = {"timeout": 3, "error": 1}
    row = {"pattern_id": "p", "version": "v1", "day": date(2026, 1, 1), "pattern_key": "p",
           **dict.fromkeys(DAILY_STAT_COLUMNS, 0),
           "error_counts": tables.daily_version_stats.c.error_counts.type.dumps(counts)}
    with engine.begin() as conn:
        bulk_insert(conn, tables.daily_version_stats, pd.DataFrame([row]))
    with engine.connect() as conn:
        assert conn.scalar(sa.select(tables.daily_version_stats.c.error_counts)) == counts
        assert _stored_text(conn, tables.daily_version_stats, "error_counts") == [json.dumps(counts, sort_keys=True)]
