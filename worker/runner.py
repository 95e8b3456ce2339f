"""The job runner: claim, fetch, train, push, record. Safe to run twice for the same job.

``run_job`` is what the Celery task calls. Every step is idempotent: the claim is a conditional
UPDATE, objects go to deterministic keys, and the results replace the job's rows in one transaction.
A job never stays ``running`` because of an exception: it ends ``failed`` with a readable error, or
``cancelled`` when the user asked; only a killed process leaves it ``running``, and then its stale
heartbeat (``app.services.liveness``) lets the redelivered task reclaim it and resume from the last
checkpoint. The heartbeat comes from a thread of its own, from the claim to the final write.

Outages: every database and object-store call waits out an outage for ``GTC_WORKER_RETRY_S``
(``app.retry``). A longer one gives the job back to the queue (``jobstate.release``): it stays
``queued`` with its checkpoint, the API's sweeper sends it again, and the next start resumes; the
attempt limit still holds.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import torch
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import JobPhase, JobStatus
from app.db.session import is_outage, make_engine, make_session_factory, session_scope
from app.retry import with_retry
from app.services import jobstate
from app.services.jobstate import ClaimedJob
from app.services.liveness import beat_period
from app.services.results import CancelledBeforeCommit, JobNotOwned, JobResults, record_results
from app.settings import Settings
from app.storage import ObjectStore, make_store
from app.storage import keys as object_keys
from app.storage.base import ObjectNotFound, StorageUnavailable
from gtcorrect.checkpoint import Checkpoint
from gtcorrect.config import TrainConfig, schedule_epochs
from gtcorrect.errors import TrainingStopped
from gtcorrect.trainer import fit
from gtcorrect.types import FitResult, Progress, json_safe
from worker.fetch import JobInputs, fetch_inputs
from worker.push import (
    annotator_rows,
    discard_all,
    push_corrected,
    push_model,
    push_plots,
    remove_stale,
    round_rows,
    verdicts,
)

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class LostOwnership(RuntimeError):
    """Another worker reclaimed the job (our heartbeat went stale) or it finished meanwhile."""

    def __init__(self, job: ClaimedJob) -> None:
        super().__init__(f"job {job.id} attempt {job.attempt} is no longer ours.")


@dataclass
class RunnerContext:
    """Process-wide resources of a worker: settings, database sessions, object store."""

    settings: Settings
    session_factory: sessionmaker[Session]
    store: ObjectStore
    cancel_poll_s: float = 1.0  # should_stop reads cancel_requested at most this often

    @classmethod
    def from_settings(cls, settings: Settings) -> RunnerContext:
        engine = make_engine(settings.resolved_database_url())
        return cls(settings, make_session_factory(engine), make_store(settings, settings.worker_retry_s))

    def db(
        self, call: Callable[Concatenate[sessionmaker[Session], P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``call(session_factory, *args)``, tried again through a database outage of up to
        ``GTC_WORKER_RETRY_S`` (each call is one transaction, safe to repeat)."""
        return with_retry(
            lambda: call(self.session_factory, *args, **kwargs),
            transient=is_outage,
            window_s=self.settings.worker_retry_s,
            what=f"database {getattr(call, '__name__', 'call')}",
        )


def choose_device(setting: str) -> str:
    """``GTC_DEVICE``: "auto" takes CUDA when present; an explicit "cuda" without CUDA is an error."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"GTC_DEVICE={setting!r} but CUDA is not available on this worker.")
    return setting


def progress_dict(progress: Progress) -> dict[str, Any]:
    """The job row's progress JSON (what ``GET /v1/jobs/{id}`` shows)."""
    return json_safe(asdict(progress))


class _Heartbeat:
    """Beats the claimed job's heartbeat from a daemon thread every ``period`` seconds until the block
    ends; ``lost`` turns True once a beat finds that another attempt owns the job. A failed beat (the
    database unreachable for a moment) is logged and tried again at the next period."""

    def __init__(self, factory: sessionmaker[Session], job: ClaimedJob, period: float) -> None:
        self._factory, self._job, self._period = factory, job, period
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job.id}", daemon=True)
        self.lost = False

    def _run(self) -> None:
        while not self._done.wait(self._period):
            try:
                if not jobstate.heartbeat(self._factory, self._job):
                    self.lost = True
                    return
            except Exception:
                log.warning("job %s: heartbeat failed; trying again", self._job.id, exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)  # a beat stuck on the database must not hold the worker


class JobTimeLimit(RuntimeError):
    """The job ran past ``GTC_JOB_TIME_LIMIT_S``; it fails with this message."""


class _Hooks:
    """fit's callbacks: progress + heartbeat per epoch, throttled cancel checks, checkpoint upload."""

    def __init__(self, ctx: RunnerContext, job: ClaimedJob, beat: _Heartbeat) -> None:
        self.ctx, self.job, self.beat = ctx, job, beat
        self.checkpoint_key = job.checkpoint_key
        self.cancelled = False
        self._last_poll = 0.0
        self._deadline = time.monotonic() + ctx.settings.job_time_limit_s - job.elapsed_s
        self._started = time.monotonic()
        self._first_epoch: int | None = None  # the epoch this attempt started from (a resume's)

    def on_progress(self, progress: Progress) -> None:
        state = progress_dict(progress)
        if self._first_epoch is None:
            self._first_epoch = progress.epoch - 1
        if progress.epoch > self._first_epoch:
            # What the ETA of GET /v1/jobs/{id} is made of: this attempt's mean epoch so far.
            state["seconds_per_epoch"] = (time.monotonic() - self._started) / (
                progress.epoch - self._first_epoch
            )
        if not self.ctx.db(jobstate.heartbeat, self.job, state):
            raise LostOwnership(self.job)
        self._last_poll = time.monotonic()
        # Read the flag at every epoch end whatever the throttle says, so a cancelled job stops at the
        # first batch of the next epoch: a cancel costs at most the epoch in flight.
        self.cancelled = self.ctx.db(jobstate.cancel_requested, self.job.id)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if self.beat.lost:
            raise LostOwnership(self.job)
        if now > self._deadline:
            limit = self.ctx.settings.job_time_limit_s
            raise JobTimeLimit(
                f"the job trained for longer than its time limit of {limit} s since it first started "
                f"(GTC_JOB_TIME_LIMIT_S); ask for fewer epochs or a smaller image_size."
            )
        if now - self._last_poll < self.ctx.cancel_poll_s:
            return self.cancelled
        self._last_poll = now
        self.cancelled = self.ctx.db(jobstate.cancel_requested, self.job.id)
        return self.cancelled

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        key = object_keys.checkpoint(self.job.project_id, self.job.id, checkpoint.epoch)
        self.ctx.store.put(key, checkpoint.to_bytes())
        if not self.ctx.db(jobstate.set_checkpoint_key, self.job, key):
            raise LostOwnership(self.job)
        previous, self.checkpoint_key = self.checkpoint_key, key
        if previous and previous != key:
            self.ctx.store.delete(previous)  # only the latest is ever resumed from


def _resume_point(ctx: RunnerContext, job: ClaimedJob) -> Checkpoint | None:
    if job.checkpoint_key is None:
        return None
    try:
        data = ctx.store.get(job.checkpoint_key)
    except ObjectNotFound:
        log.warning("job %s: checkpoint %s is missing; training from scratch", job.id, job.checkpoint_key)
        return None
    log.info("job %s attempt %d resumes from %s", job.id, job.attempt, job.checkpoint_key)
    return Checkpoint.from_bytes(data)


def _train(
    ctx: RunnerContext, job: ClaimedJob, beat: _Heartbeat, config: TrainConfig, inputs: JobInputs
) -> FitResult:
    hooks = _Hooks(ctx, job, beat)
    try:
        return fit(
            config,
            inputs.data,
            device=choose_device(ctx.settings.device),
            callbacks=[hooks.on_progress],
            should_stop=hooks.should_stop,
            checkpoint=hooks.save_checkpoint,
            resume=_resume_point(ctx, job),
        )
    except TrainingStopped:
        if hooks.cancelled:
            raise
        raise RuntimeError("training stopped although no cancellation was requested.") from None


def _final_progress(result: FitResult) -> dict[str, Any]:
    last = result.history[-1] if result.history else None
    progress: dict[str, Any] = progress_dict(last) if last is not None else {}
    progress.update(
        phase=JobPhase.done.value,
        metrics=json_safe(dict(result.metrics)),
        estimated_noise_rate=float(result.flagged.mean()) if len(result.flagged) else 0.0,
    )
    return progress


def _enter(ctx: RunnerContext, job: ClaimedJob, phase: JobPhase, progress: dict[str, Any]) -> None:
    """Show ``phase`` in the job's progress (a step of the worker's own, between the epochs' reports)."""
    if not ctx.db(jobstate.heartbeat, job, {**progress, "phase": phase.value}):
        raise LostOwnership(job)


def _run_claimed(ctx: RunnerContext, job: ClaimedJob, beat: _Heartbeat) -> JobStatus:
    config = TrainConfig.from_stored(job.config)
    planned = {"total_epochs": schedule_epochs(config)}
    _enter(ctx, job, JobPhase.fetching_inputs, planned)
    inputs = ctx.db(_fetch, ctx.store, job, config.image_size)
    _enter(ctx, job, JobPhase.preparing, planned)
    result = _train(ctx, job, beat, config, inputs)
    _enter(ctx, job, JobPhase.storing_results, _final_progress(result))
    corrected = push_corrected(ctx.store, job, inputs, result)
    plots = push_plots(ctx.store, job, result, config)
    weights_key = push_model(ctx.store, job, result)
    metrics = {**result.metrics, "samples": len(inputs.refs), "flagged": int(result.flagged.sum())}
    if result.quality is not None:  # the model resource shows it: how good the model is on this data
        metrics["validation"] = result.quality.to_dict().get("validation")
    results = JobResults(
        verdicts=verdicts(inputs, result),
        corrected=corrected,
        weights_key=weights_key,
        metrics=json_safe(metrics),
        progress=_final_progress(result),
        quality=None if result.quality is None else result.quality.to_dict(),
        rounds=round_rows(result, config.g.tau),
        annotators=annotator_rows(result),
    )
    try:
        ctx.db(_record, job, results)
    except JobNotOwned as exc:
        raise LostOwnership(job) from exc
    except CancelledBeforeCommit:
        raise TrainingStopped(schedule_epochs(config)) from None  # ends cancelled, objects discarded
    # Checkpoints and an earlier attempt's leftovers are garbage once the results are committed.
    remove_stale(ctx.store, job.id, job.project_id, [c.object_key for c in corrected] + plots)
    return JobStatus.succeeded


def _fetch(factory: sessionmaker[Session], store: ObjectStore, job: ClaimedJob, size: int) -> JobInputs:
    with session_scope(factory) as session:
        return fetch_inputs(session, store, job.dataset_id, job.selection, size)


def _record(factory: sessionmaker[Session], job: ClaimedJob, results: JobResults) -> None:
    with session_scope(factory) as session:
        record_results(session, job.id, job.attempt, results)


def _outage(exc: BaseException) -> bool:
    """The object store or the database stayed unreachable past the retry window."""
    return isinstance(exc, StorageUnavailable) or is_outage(exc)


def run_job(job_id: uuid.UUID, ctx: RunnerContext) -> JobStatus | None:
    """Run training job ``job_id`` to a terminal status; return it, or None when this call did not run it
    (missing, terminal, owned by a live worker, cancelled before start, out of attempts, or reclaimed)."""
    settings = ctx.settings
    job = ctx.db(
        jobstate.claim_job,
        job_id,
        stale_after_s=settings.heartbeat_stale_s,
        max_attempts=settings.max_attempts,
    )
    if job is None:
        log.info("job %s: not claimed (missing, finished, cancelled or owned by a live worker)", job_id)
        return None
    log.info("job %s: claimed, attempt %d", job_id, job.attempt)
    try:
        with _Heartbeat(ctx.session_factory, job, beat_period(settings.heartbeat_stale_s)) as beat:
            return _run_claimed(ctx, job, beat)
    except LostOwnership as exc:
        log.warning("job %s: stopped, %s", job_id, exc)
        return None
    except TrainingStopped:
        if ctx.db(jobstate.finish, job, JobStatus.cancelled):
            _discard_objects(ctx, job)
        log.info("job %s: cancelled", job_id)
        return JobStatus.cancelled
    except Exception as exc:
        if _outage(exc):
            _give_back(ctx, job, exc)
            return None
        log.exception("job %s: failed", job_id)
        error = f"{type(exc).__name__}: {exc}"
        if ctx.db(jobstate.finish, job, JobStatus.failed, error[:4000]):
            _discard_objects(ctx, job)
        return JobStatus.failed


def _give_back(ctx: RunnerContext, job: ClaimedJob, exc: BaseException) -> None:
    """A dependency stayed down past the retry window: the job goes back to the queue with its checkpoint
    (or, when even that write fails, stays ``running`` until its heartbeat goes stale and the sweeper
    re-sends it). Either way a later start resumes it; nothing is discarded."""
    what = "object store" if isinstance(exc, StorageUnavailable) else "database"
    reason = f"the {what} was unavailable for over {ctx.settings.worker_retry_s:.0f} s; the job will resume"
    log.warning("job %s: %s: %s", job.id, reason, exc)
    try:
        released = ctx.db(jobstate.release, job, reason)
    except Exception:
        log.warning("job %s: could not give it back; its stale heartbeat will", job.id, exc_info=True)
        return
    log.info("job %s: %s", job.id, "back in the queue" if released else "owned by another attempt now")


def _discard_objects(ctx: RunnerContext, job: ClaimedJob) -> None:
    """A cancelled or failed job is never resumed: its checkpoints and partial uploads are garbage."""
    try:
        removed = discard_all(ctx.store, job)
    except Exception:  # the status is already final; a leftover object is only wasted space
        log.warning("job %s: could not remove its objects", job.id, exc_info=True)
        return
    log.info("job %s: removed %d checkpoint and partial objects", job.id, removed)
