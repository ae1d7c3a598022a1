"""Stable, safe Dagster partition keys for arbitrary pattern ids.

Dagster rejects `| , [ ]`, `...`, control characters and very long keys, and silently drops
multi-partition keys it cannot split. A pattern id that is already a conservative key is used
as is; any other id becomes `slug-<hash>`, stable across processes and machines. The mapping is
stored in the warehouse (`patterns`); data rows always keep the original id.
"""

from __future__ import annotations

import hashlib
import re

from feedback_loop_dagster.lib.errors import InvalidInput

MAX_KEY_LENGTH = 100
_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+=-]*")
_SLUG_UNSAFE = re.compile(r"[^a-z0-9]+")
_SLUG_LENGTH = 48


def is_safe_partition_key(pattern_id: str) -> bool:
    return (
        len(pattern_id) <= MAX_KEY_LENGTH
        and _SAFE_KEY.fullmatch(pattern_id) is not None
        and "..." not in pattern_id
    )


def safe_partition_key(pattern_id: str) -> str:
    """The pattern dimension's key for `pattern_id` (identity when it is already safe)."""
    if not isinstance(pattern_id, str) or pattern_id == "":
        raise InvalidInput(f"pattern id must be a non-empty string, got {pattern_id!r}")
    if is_safe_partition_key(pattern_id):
        return pattern_id
    digest = hashlib.sha256(pattern_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    slug = _SLUG_UNSAFE.sub("-", pattern_id.lower()).strip("-")[:_SLUG_LENGTH].strip("-")
    return f"{slug or 'pattern'}-{digest}"
