"""Deterministic traffic assignment: the documented way for callers to route a unit to a version.

A unit (user, session) lands in a stable bucket in [0, 1) from a SHA-256 of the experiment's salt
and its id, so the same unit always sees the same arm of an experiment, different experiments
re-randomise, and the treatment share converges on the planned split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
from sqlalchemy.engine import Engine

from feedback_loop_dagster.lib.experiment.experiments import running_experiment
from feedback_loop_dagster.lib.registry.versions import ACTIVE, get_label

_SCALE = float(2**64)


def unit_bucket(salt: str, unit_id: str) -> float:
    digest = hashlib.sha256(f"{salt}\x00{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def in_treatment(salt: str, unit_ids: Iterable[str], treatment_share: float) -> np.ndarray:
    """For each unit: does it belong to the treatment arm?"""
    return np.array([unit_bucket(salt, u) < treatment_share for u in unit_ids], dtype=bool)


def experiment_salt(pattern_id: str, experiment_id: int) -> str:
    return f"{pattern_id}\x00{experiment_id}"


def assign_variant(pattern_id: str, unit_id: str, engine: Engine | None = None) -> str:
    """The version `unit_id` should run for `pattern_id`: the active one, or its arm of the
    running experiment. Record the returned name as the execution's `pattern_version`.

    `engine` defaults to the configured warehouse (FEEDBACK_LOOP_DATABASE_URL).
    """
    if engine is None:
        from feedback_loop_dagster.lib import settings
        from feedback_loop_dagster.lib.storage.database import get_engine

        engine = get_engine(settings.database_url())
    with engine.connect() as conn:
        experiment = running_experiment(conn, pattern_id)
        if experiment is not None:
            salt = experiment_salt(pattern_id, experiment.id)
            arm = experiment.treatment if unit_bucket(salt, unit_id) < experiment.traffic_split else experiment.control
            return arm.version
        active = get_label(conn, pattern_id, ACTIVE)
    if active is None:
        raise LookupError(f"pattern {pattern_id!r} has no active version yet")
    return active.version
