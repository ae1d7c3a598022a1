"""JSON documents in TEXT columns, encoded and decoded by SQLAlchemy instead of at each call site.

The storage stays TEXT on both databases (no migration, and what was stored before reads back
unchanged). Each column keeps the encoding its writers have always used (`sort_keys`, `default`),
so a document is stored byte for byte as before. NaN and infinities are written as the `NaN` /
`Infinity` literals Python's json module writes and reads (TEXT holds them; a jsonb column would
not). A pydantic model is stored as its own `model_dump_json()`. Python None is SQL NULL.

Paths that bypass SQLAlchemy's type processing (bulk writes of frames, `read_frames`, raw SQL)
see the TEXT: they encode with `dumps` and decode with json.loads themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pydantic
import sqlalchemy as sa


class JSONText(sa.TypeDecorator):
    """A JSON document stored as TEXT: bind a Python value, read back the decoded value."""

    impl = sa.Text
    cache_ok = True

    def __init__(self, sort_keys: bool = False, default: Callable[[Any], Any] | None = None):
        super().__init__()
        self.sort_keys = sort_keys
        self.default = default

    def dumps(self, value: Any) -> str:
        """The column's text of `value`."""
        if isinstance(value, pydantic.BaseModel):
            return value.model_dump_json()
        return json.dumps(value, sort_keys=self.sort_keys, default=self.default)

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str | None:
        return None if value is None else self.dumps(value)

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> Any:
        return None if value is None else json.loads(value)
