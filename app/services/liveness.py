"""When a ``running`` job counts as abandoned: the one rule of the worker's claim, the sweeper and the
worker's start-up recovery.

A worker that owns a job beats its heartbeat every ``beat_period(stale_after_s)`` seconds from a thread of
its own (``worker.runner``), from the claim to the final write, whatever the training thread is doing
(fetching inputs, a long epoch, uploading results). A job whose heartbeat is older than
``stale_after_s`` (``GTC_HEARTBEAT_STALE_S``) has lost its worker (SIGKILL, out of memory, a lost
machine): another worker may claim it and resume from its last checkpoint. Four beats fit in one stale
period, so one late beat (a slow database) does not make a live worker look dead.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import ColumnElement

from app.db.models import JobStatus, TrainingJob, as_utc, utcnow

BEATS_PER_STALE_PERIOD = 4


def beat_period(stale_after_s: float) -> float:
    """Seconds between a live worker's heartbeats."""
    return stale_after_s / BEATS_PER_STALE_PERIOD


def stale_before(stale_after_s: float, now: datetime | None = None) -> datetime:
    """Heartbeats older than this moment are stale."""
    return (now or utcnow()) - timedelta(seconds=stale_after_s)


def is_abandoned(heartbeat_at: datetime | None, stale_after_s: float, now: datetime | None = None) -> bool:
    """For a ``running`` job: its worker has not beaten within ``stale_after_s`` (or never did)."""
    return heartbeat_at is None or as_utc(heartbeat_at) < stale_before(stale_after_s, now)


def seconds_until_abandoned(heartbeat_at: datetime | None, stale_after_s: float, now: datetime) -> float:
    """How long a ``running`` job must stay silent before it counts as abandoned (0: it does now)."""
    if heartbeat_at is None:
        return 0.0
    return max(0.0, stale_after_s - (now - as_utc(heartbeat_at)).total_seconds())


def abandoned(stale_after_s: float, now: datetime | None = None) -> ColumnElement[bool]:
    """SQL for ``is_abandoned``, restricted to ``running`` jobs (conditional UPDATEs use it)."""
    return and_(
        TrainingJob.status == JobStatus.running,
        or_(TrainingJob.heartbeat_at.is_(None), TrainingJob.heartbeat_at < stale_before(stale_after_s, now)),
    )
