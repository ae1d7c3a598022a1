"""JSON merge patches (RFC 7386): how a proposal says what to change in a version's config."""

from __future__ import annotations

import copy
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def diff_patch(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that turns `source` into `target` (merge_patch(source, diff) == target).

    Null values inside `target` cannot be expressed by a merge patch (null means delete); configs
    here do not use them.
    """
    patch: dict[str, Any] = {}
    for key in source.keys() - target.keys():
        patch[key] = None
    for key, value in target.items():
        if key not in source:
            patch[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(source[key], dict):
            nested = diff_patch(source[key], value)
            if nested:
                patch[key] = nested
        elif source[key] != value:
            patch[key] = copy.deepcopy(value)
    return patch
