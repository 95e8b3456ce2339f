"""Every write of a job's status, in one module, so that the API, the sweeper, the worker and the outage
path cannot disagree about the transitions:

    queued -> running (claim_job) -> succeeded (mark_succeeded, with the results)
                                  -> failed | cancelled (finish)
                                  -> queued (release: a dependency outage; the next claim resumes)
    queued -> cancelled (cancel_queued; also claim_job when cancel was asked before it started)
    queued | running -> failed (claim_job or fail_out_of_attempts: past max_attempts)

Ownership: a worker owns a job while the row is ``running`` with the ``attempt`` number its claim
set. Every later write (heartbeat, checkpoint key, final status) is conditional on that pair, so a
worker whose job was reclaimed after its heartbeat went stale cannot overwrite the new owner's work.
The worker's functions take a session factory (each its own short transaction); the API's take the
request's session.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from app.db.models import JobPhase, JobStatus, TrainingJob, as_utc, utcnow
from app.db.session import session_scope
from app.services.liveness import abandoned
from gtcorrect.types import json_safe

Factory = sessionmaker[Session]

DISPATCH_KEY = "dispatch"
DISPATCH_PENDING = "pending"


def mark_pending(progress: dict[str, Any] | None, reason: str) -> dict[str, Any]:
    """The progress JSON of a queued job whose message the broker did not take (the outbox marker that
    the API's sweeper sends again)."""
    return {
        **(progress or {}),
        "phase": JobPhase.queued.value,
        DISPATCH_KEY: DISPATCH_PENDING,
        "dispatch_error": reason,
    }


@dataclass(frozen=True)
class ClaimedJob:
    """What the runner needs from the job row after a successful claim."""

    id: uuid.UUID
    attempt: int
    project_id: uuid.UUID
    dataset_id: uuid.UUID
    config: dict[str, Any]
    selection: dict[str, Any]
    checkpoint_key: str | None
    elapsed_s: float = 0.0  # since the job first started (earlier attempts included)


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def _claimable(stale_after_s: float) -> ColumnElement[bool]:
    # Queued, or running but abandoned by its worker (``app.services.liveness``): a killed worker whose
    # message was redelivered, or re-sent by the sweeper.
    return or_(TrainingJob.status == JobStatus.queued, abandoned(stale_after_s))


def claim_job(
    factory: Factory, job_id: uuid.UUID, *, stale_after_s: float, max_attempts: int
) -> ClaimedJob | None:
    """Take ownership of ``job_id``, or return None when this worker must not run it.

    None when the job is missing, terminal, owned by a live worker (fresh heartbeat), cancelled before
    it started (it becomes ``cancelled``) or past ``max_attempts`` (it becomes ``failed``).
    """
    now = utcnow()
    with session_scope(factory) as session:
        session.execute(
            update(TrainingJob)
            .where(
                TrainingJob.id == job_id, TrainingJob.cancel_requested.is_(True), _claimable(stale_after_s)
            )
            .values(status=JobStatus.cancelled, finished_at=now)
        )
        claimed = session.execute(
            update(TrainingJob)
            .where(
                TrainingJob.id == job_id, TrainingJob.cancel_requested.is_(False), _claimable(stale_after_s)
            )
            .values(
                status=JobStatus.running,
                attempt=TrainingJob.attempt + 1,
                heartbeat_at=now,
                started_at=func.coalesce(TrainingJob.started_at, now),
                error=None,
            )
        )
        if _rowcount(claimed) != 1:
            return None
        job = session.execute(select(TrainingJob).where(TrainingJob.id == job_id)).scalar_one()
        if job.attempt > max_attempts:
            # A job that kills its worker every time (out of memory) would otherwise loop forever.
            job.status = JobStatus.failed
            job.finished_at = now
            job.error = (
                f"the job was started {job.attempt - 1} times without finishing (max_attempts="
                f"{max_attempts}); its worker was probably killed, e.g. out of memory."
            )
            return None
        return ClaimedJob(
            id=job.id,
            attempt=job.attempt,
            project_id=job.project_id,
            dataset_id=job.dataset_id,
            config=dict(job.config),
            selection=dict(job.batch_ids or {}),
            checkpoint_key=job.checkpoint_key,
            elapsed_s=(now - as_utc(job.started_at or now)).total_seconds(),
        )


def _owned(job: ClaimedJob) -> ColumnElement[bool]:
    return and_(
        TrainingJob.id == job.id,
        TrainingJob.attempt == job.attempt,
        TrainingJob.status == JobStatus.running,
    )


def heartbeat(factory: Factory, job: ClaimedJob, progress: dict[str, Any] | None = None) -> bool:
    """Refresh the heartbeat (and progress); False when this worker no longer owns the job."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = json_safe(progress)
    with session_scope(factory) as session:
        return _rowcount(session.execute(update(TrainingJob).where(_owned(job)).values(**values))) == 1


def set_checkpoint_key(factory: Factory, job: ClaimedJob, key: str) -> bool:
    """Record the latest checkpoint; False when this worker no longer owns the job."""
    with session_scope(factory) as session:
        result = session.execute(
            update(TrainingJob).where(_owned(job)).values(checkpoint_key=key, heartbeat_at=utcnow())
        )
        return _rowcount(result) == 1


def cancel_requested(factory: Factory, job_id: uuid.UUID) -> bool:
    with session_scope(factory) as session:
        flag = session.scalar(select(TrainingJob.cancel_requested).where(TrainingJob.id == job_id))
        return bool(flag)


def finish(factory: Factory, job: ClaimedJob, status: JobStatus, error: str | None = None) -> bool:
    """End an owned job as failed or cancelled; False when another worker owns it now."""
    with session_scope(factory) as session:
        result = session.execute(
            update(TrainingJob)
            .where(_owned(job))
            .values(status=status, error=error, finished_at=utcnow(), heartbeat_at=utcnow())
        )
        return _rowcount(result) == 1


def release(factory: Factory, job: ClaimedJob, reason: str) -> bool:
    """Give an owned job back to the queue (a dependency outage): ``queued`` again with its checkpoint key,
    marked for the API's sweeper to send (``mark_pending``). Its attempt number stays, so the next claim
    counts as another start against ``max_attempts``. False when this worker no longer owns the job."""
    with session_scope(factory) as session:
        progress = session.scalar(select(TrainingJob.progress).where(_owned(job)))
        result = session.execute(
            update(TrainingJob)
            .where(_owned(job))
            .values(status=JobStatus.queued, progress=mark_pending(progress, reason), heartbeat_at=None)
        )
        return _rowcount(result) == 1


def cancel_queued(session: Session, job_id: uuid.UUID) -> None:
    """A cancel asked of a job nobody claimed yet ends it at once (conditional: a worker may claim it
    between the caller's read and this write; then it stops at its next check)."""
    session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, finished_at=utcnow())
    )


def fail_out_of_attempts(
    session: Session, job_id: uuid.UUID, attempt: int, stale_after_s: float, error: str
) -> bool:
    """Fail an abandoned job that used its last start; False when its owner beat meanwhile or it ended."""
    result = session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.attempt == attempt, abandoned(stale_after_s, utcnow()))
        .values(status=JobStatus.failed, error=error, finished_at=utcnow())
    )
    return _rowcount(result) == 1


def mark_succeeded(job: TrainingJob) -> None:
    """The job's results are in (``app.services.results.record_results``, in the same transaction)."""
    now = utcnow()
    job.status = JobStatus.succeeded
    job.error = None
    job.checkpoint_key = None  # the worker deletes the checkpoints once the model supersedes them
    job.finished_at = now
    job.heartbeat_at = now
