"""Re-send the tasks of unfinished jobs when the embedded service starts.

The filesystem broker of ``gtcorrect serve`` loses a message that was being worked on when the worker
was killed, so nothing would ever retry that job. Re-sending is safe because the claim is conditional:
a duplicate of a job that is already done, or owned by a live worker, does nothing.
"""

from __future__ import annotations

import uuid

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import JobStatus, TrainingJob, utcnow
from app.db.session import session_scope
from app.services.liveness import seconds_until_abandoned
from worker.celery_app import TRAIN_QUEUE, TRAIN_TASK


def resend_delays(factory: sessionmaker[Session], stale_after_s: float) -> dict[uuid.UUID, float]:
    """job id -> seconds to wait before re-sending: 0 for queued jobs; for running ones, until their
    heartbeat is stale (earlier, the claim would rightly refuse them)."""
    now = utcnow()
    with session_scope(factory) as session:
        rows = session.execute(
            select(TrainingJob.id, TrainingJob.status, TrainingJob.heartbeat_at).where(
                TrainingJob.status.in_([JobStatus.queued, JobStatus.running])
            )
        ).all()
    delays: dict[uuid.UUID, float] = {}
    for job_id, status, heartbeat_at in rows:
        if status == JobStatus.queued or heartbeat_at is None:
            delays[job_id] = 0.0
        else:
            delays[job_id] = seconds_until_abandoned(heartbeat_at, stale_after_s, now) + 1.0
    return delays


def resend_unfinished(app: Celery, factory: sessionmaker[Session], stale_after_s: float) -> int:
    """Send ``gtcorrect.train`` again for every queued or running job; return how many were sent."""
    delays = resend_delays(factory, stale_after_s)
    for job_id, delay in delays.items():
        app.send_task(TRAIN_TASK, args=[str(job_id)], queue=TRAIN_QUEUE, countdown=delay or None)
    return len(delays)
