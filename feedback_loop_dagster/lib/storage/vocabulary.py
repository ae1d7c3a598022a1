"""The words the warehouse stores in its vocabulary columns, one StrEnum per vocabulary.

Members are strings (`ExperimentStatus.RUNNING == "running"`), so they go into queries and JSON
as they are and rows read back compare equal to them.
"""

from __future__ import annotations

from enum import StrEnum


class ExperimentKind(StrEnum):
    """`experiments.kind`."""

    AB = "ab"  # a candidate against the active version
    WATCH = "watch"  # a promoted version against the one it replaced, on a holdback


class ExperimentStatus(StrEnum):
    """`experiments.status`; how a concluded experiment ended is its `outcome`."""

    RUNNING = "running"
    CONCLUDED = "concluded"
    STOPPED = "stopped"


class DecisionAction(StrEnum):
    """`decisions.action`: what the decision does to the `active` label."""

    APPLY = "apply"
    REJECT = "reject"
    ROLLBACK = "rollback"
    KEEP = "keep"


class DecisionStatus(StrEnum):
    """`decisions.status`."""

    DONE = "done"
    PENDING_REVIEW = "pending_review"
    DISMISSED = "dismissed"
