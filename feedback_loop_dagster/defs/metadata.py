"""Turning DataFrames into Dagster table metadata that the UI renders."""

from __future__ import annotations

import math

import dagster as dg
import pandas as pd


def _cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return round(value, 6)
    return str(value)


def table_metadata(frame: pd.DataFrame, limit: int = 50) -> dg.TableMetadataValue:
    frame = frame.head(limit)
    records = [
        dg.TableRecord({str(k): _cell(v) for k, v in row.items()}) for row in frame.to_dict(orient="records")
    ]
    schema = dg.TableSchema(columns=[dg.TableColumn(str(c), str(frame[c].dtype)) for c in frame.columns])
    return dg.MetadataValue.table(records, schema=schema)
