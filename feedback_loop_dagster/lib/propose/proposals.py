"""Gathering a pattern's evidence and recording proposals without repeating open ones."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from feedback_loop_dagster.lib.analyze.period import period_stats
from feedback_loop_dagster.lib.propose.analyzers import PatternEvidence, ProposalDraft, run_analyzers
from feedback_loop_dagster.lib.registry.versions import ACTIVE, IMPLICIT_VERSION, get_label, get_version
from feedback_loop_dagster.lib.stats import Policy
from feedback_loop_dagster.lib.storage import tables

OPEN_STATUSES = ("open", "experimenting")
# An experiment refused these, ended without showing them better (inconclusive), or a person
# stopped it: the same change on the same base version is not proposed again.
SETTLED_STATUSES = ("rejected", "rolled_back", "stopped", "inconclusive")


@dataclass(frozen=True)
class ProposalOutcome:
    created: list[int]
    seen_again: list[int]
    superseded: int
    # Drafts identical to a proposal already rejected, rolled back or stopped on the same base version.
    already_tried: list[int] = field(default_factory=list)


def gather_evidence(conn: Connection, pattern_id: str, window: date, policy: Policy) -> PatternEvidence | None:
    active = get_label(conn, pattern_id, ACTIVE)
    if active is None:
        return None
    days = policy.time_window_days
    first = window - timedelta(days=days - 1)
    stats = period_stats(conn, pattern_id, active.version, first, window)
    previous = period_stats(conn, pattern_id, active.version, first - timedelta(days=days), first - timedelta(days=1))
    daily = tables.daily_version_stats
    errors: Counter = Counter()
    for counts in conn.scalars(
        sa.select(daily.c.error_counts).where(
            daily.c.pattern_id == pattern_id, daily.c.version == active.version, daily.c.day.between(first, window)
        )
    ):
        errors.update(counts)

    f = tables.feedback
    version_filter = (
        f.c.pattern_version.is_(None) if active.version == IMPLICIT_VERSION else f.c.pattern_version == active.version
    )
    # By partition key and window: the primary key's prefix, so one range of the index, not a scan.
    key = sa.select(tables.patterns.c.partition_key).where(tables.patterns.c.pattern_id == pattern_id).scalar_subquery()
    rows = pd.DataFrame(
        conn.execute(
            sa.select(f.c.status, f.c.retry_count, f.c.unit_id, f.c.duration_ms).where(
                f.c.pattern_key == key, f.c.window_start.between(first, window), version_filter
            )
        ).all(),
        columns=["status", "retry_count", "unit_id", "duration_ms"],
    )
    retried = rows[rows["retry_count"].fillna(0) > 0]
    durations = pd.to_numeric(rows["duration_ms"]).to_numpy(dtype=float)
    durations = durations[durations > 0]
    # the order statistic a sort would give, without sorting every duration
    k = int(0.05 * (len(durations) - 1))
    latency_p05 = float(np.partition(durations, k)[k]) if len(durations) else None
    metrics_row = conn.execute(
        sa.select(tables.pattern_metrics.c.regressions).where(
            tables.pattern_metrics.c.pattern_id == pattern_id,
            tables.pattern_metrics.c.window_start == window,
            tables.pattern_metrics.c.version == active.version,
        )
    ).scalar()
    return PatternEvidence(
        pattern_id=pattern_id,
        window=window,
        policy=policy,
        active=active,
        parent=get_version(conn, active.parent_id) if active.parent_id else None,
        stats=stats,
        previous_stats=previous,
        error_counts=dict(errors),
        retried_executions=len(retried),
        retried_successes=int((retried["status"] == "success").sum()),
        units=int(rows["unit_id"].notna().sum()),
        distinct_units=int(rows["unit_id"].nunique()),
        latency_p05=latency_p05,
        regressions=metrics_row if metrics_row is not None else [],
    )


def fingerprint(active_version_id: int, draft: ProposalDraft) -> str:
    """Same analyzer, same change, same base version: the same proposal."""
    # hashed, not stored: the text only needs to be canonical
    key = json.dumps([active_version_id, draft.analyzer, draft.patch, None if draft.patch else draft.title], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def propose(conn: Connection, pattern_id: str, window: date, policy: Policy) -> ProposalOutcome:
    """Run the analyzers on the pattern's evidence and record what is new."""
    evidence = gather_evidence(conn, pattern_id, window, policy)
    if evidence is None:
        return ProposalOutcome([], [], 0)
    p = tables.proposals
    # Open proposals made for an earlier active version no longer describe this one.
    superseded = conn.execute(
        p.update()
        .where(p.c.pattern_id == pattern_id, p.c.status == "open", p.c.base_version_id != evidence.active.id)
        .values(status="superseded")
    ).rowcount
    created, seen, tried = [], [], []
    for draft in run_analyzers(evidence):
        mark = fingerprint(evidence.active.id, draft)
        settled = conn.scalar(
            sa.select(p.c.id).where(p.c.pattern_id == pattern_id, p.c.fingerprint == mark, p.c.status.in_(SETTLED_STATUSES))
        )
        if settled is not None:
            tried.append(settled)
            continue
        existing = conn.scalar(
            sa.select(p.c.id).where(p.c.pattern_id == pattern_id, p.c.fingerprint == mark, p.c.status.in_(OPEN_STATUSES))
        )
        if existing is not None:
            conn.execute(
                p.update().where(p.c.id == existing, p.c.last_seen_window < window).values(last_seen_window=window)
            )
            seen.append(existing)
            continue
        result = conn.execute(
            p.insert().values(
                pattern_id=pattern_id,
                window_start=window,
                analyzer=draft.analyzer,
                base_version_id=evidence.active.id,
                kind=draft.kind,
                title=draft.title,
                metric=draft.metric,
                expected_delta=draft.expected_delta,
                expected_delta_low=draft.expected_delta_low,
                expected_delta_high=draft.expected_delta_high,
                risk=draft.risk,
                priority=draft.priority,
                evidence=draft.evidence,
                patch=draft.patch,
                fingerprint=mark,
                status="open",
                last_seen_window=window,
                created_at=datetime.now(UTC),
            )
        )
        created.append(int(result.inserted_primary_key[0]))
    return ProposalOutcome(created, seen, superseded, tried)


def proposals_by_id(conn: Connection, ids: list[int], columns: list[str]) -> pd.DataFrame:
    """The stored proposals `ids` (their `columns`, which include `id`), indexed by id."""
    p = tables.proposals
    rows = conn.execute(sa.select(*(p.c[c] for c in columns)).where(p.c.id.in_(ids))).all()
    return pd.DataFrame(rows, columns=columns).set_index("id", drop=False)
