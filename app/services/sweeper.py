"""The job sweeper: re-send jobs whose message was lost or whose worker died; fail those out of attempts.

Runs in the API process every ``GTC_SWEEP_INTERVAL_S`` (``app.main``'s lifespan), in production and in
the embedded mode alike. It covers what the broker alone cannot:

- outbox: a job committed while the broker refused the message is marked ``dispatch: pending`` and sent
  on the next sweep after the broker is back;
- a ``queued`` job that no worker claimed for ``queued_resend_s`` (a message lost by a broker restart or
  an embedded broker) is sent again;
- a ``running`` job whose heartbeat is older than ``heartbeat_stale_s`` (its worker died: SIGKILL, OOM,
  a lost machine) is sent again, so a live worker reclaims it and resumes from its last checkpoint;
  without this, Redis would redeliver it only after the visibility timeout (12 h by default);
- a stale ``running`` job that already used ``max_attempts`` is marked ``failed`` instead, so a job that
  kills every worker it lands on does not loop forever.

Sending twice is harmless: the worker's claim is a conditional UPDATE (``app.services.jobstate.claim_job``).
A per-process memory of what was sent keeps each job to one message per threshold.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import JobPhase, JobStatus, TrainingJob, as_utc, utcnow
from app.db.session import session_scope
from app.services import jobstate
from app.services.jobstate import DISPATCH_KEY, DISPATCH_PENDING
from app.services.liveness import is_abandoned
from app.services.queue import QueueError, TaskQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPolicy:
    """Thresholds in seconds; ``max_attempts`` as for the worker's claim."""

    heartbeat_stale_s: float
    queued_resend_s: float
    max_attempts: int


@dataclass
class SweepReport:
    """What one sweep did, job ids per action."""

    sent_pending: list[uuid.UUID] = field(default_factory=list)
    resent_queued: list[uuid.UUID] = field(default_factory=list)
    resent_stale: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    send_error: str | None = None


@dataclass(frozen=True)
class _Row:
    id: uuid.UUID
    status: JobStatus
    created_at: datetime
    heartbeat_at: datetime | None
    attempt: int
    pending: bool


class Sweeper:
    """One per API process; ``sweep_once`` is blocking (database and broker calls)."""

    def __init__(self, factory: sessionmaker[Session], queue: TaskQueue, policy: SweepPolicy) -> None:
        self.factory, self.queue, self.policy = factory, queue, policy
        self._sent: dict[uuid.UUID, float] = {}  # job id -> time.monotonic() of our last send

    def _unfinished(self) -> list[_Row]:
        with session_scope(self.factory) as session:
            rows = session.execute(
                select(
                    TrainingJob.id,
                    TrainingJob.status,
                    TrainingJob.created_at,
                    TrainingJob.heartbeat_at,
                    TrainingJob.attempt,
                    TrainingJob.progress,
                ).where(TrainingJob.status.in_([JobStatus.queued, JobStatus.running]))
            ).all()
        return [
            _Row(r[0], r[1], as_utc(r[2]), r[3], r[4], (r[5] or {}).get(DISPATCH_KEY) == DISPATCH_PENDING)
            for r in rows
        ]

    def _recently_sent(self, job_id: uuid.UUID, within_s: float) -> bool:
        sent = self._sent.get(job_id)
        return sent is not None and time.monotonic() - sent < within_s

    def _fail_out_of_attempts(self, row: _Row, now: datetime) -> bool:
        error = (
            f"the job was started {row.attempt} times and its worker stopped answering each time "
            f"(max_attempts={self.policy.max_attempts}); it was probably killed, e.g. out of memory."
        )
        with session_scope(self.factory) as session:
            # Conditional: the owner may have beaten meanwhile, or finished.
            return jobstate.fail_out_of_attempts(
                session, row.id, row.attempt, self.policy.heartbeat_stale_s, error
            )

    def _clear_pending(self, job_id: uuid.UUID) -> None:
        with session_scope(self.factory) as session:
            # One conditional UPDATE: a worker that claimed the job meanwhile owns its progress now.
            session.execute(
                update(TrainingJob)
                .where(TrainingJob.id == job_id, TrainingJob.status == JobStatus.queued)
                .values(progress={"phase": JobPhase.queued.value})
            )

    def _send(self, job_id: uuid.UUID, report: SweepReport) -> bool:
        try:
            self.queue.send_train(job_id)
        except QueueError as exc:
            report.send_error = str(exc)
            return False
        self._sent[job_id] = time.monotonic()
        return True

    def _plan(self, rows: list[_Row], report: SweepReport) -> list[tuple[uuid.UUID, list[uuid.UUID]]]:
        """(job id, the report list it joins once sent), pending outbox jobs first; fails the hopeless."""
        now = utcnow()
        queued_before = now - timedelta(seconds=self.policy.queued_resend_s)
        plan: list[tuple[uuid.UUID, list[uuid.UUID]]] = []
        for row in sorted(rows, key=lambda r: (not r.pending, r.created_at)):
            if row.status == JobStatus.queued:
                if row.pending:
                    plan.append((row.id, report.sent_pending))
                elif row.created_at < queued_before and not self._recently_sent(
                    row.id, self.policy.queued_resend_s
                ):
                    plan.append((row.id, report.resent_queued))
            elif is_abandoned(row.heartbeat_at, self.policy.heartbeat_stale_s, now):
                if row.attempt >= self.policy.max_attempts:
                    if self._fail_out_of_attempts(row, now):
                        report.failed.append(row.id)
                elif not self._recently_sent(row.id, self.policy.heartbeat_stale_s):
                    plan.append((row.id, report.resent_stale))
        return plan

    def sweep_once(self) -> SweepReport:
        """One pass; stops sending at the first broker error (the rest waits for the next pass)."""
        report = SweepReport()
        rows = self._unfinished()
        live = {row.id for row in rows}
        self._sent = {job_id: t for job_id, t in self._sent.items() if job_id in live}
        for job_id, bucket in self._plan(rows, report):
            if not self._send(job_id, report):
                log.warning("sweeper: broker unavailable, will retry: %s", report.send_error)
                break
            bucket.append(job_id)
            if bucket is report.sent_pending:
                self._clear_pending(job_id)
        actions = (
            ("sent (broker refused it before)", report.sent_pending),
            ("re-sent (queued, unclaimed)", report.resent_queued),
            ("re-sent (running, worker silent)", report.resent_stale),
            ("failed (out of attempts)", report.failed),
        )
        for action, job_ids in actions:
            for job_id in job_ids:
                log.info("sweeper: job %s %s", job_id, action)
        return report
