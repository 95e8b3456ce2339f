"""Training jobs: create (validated), submit (commit, then enqueue; the row is the outbox), read, list,
cancel."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.db.models import (
    TERMINAL_STATUSES,
    Annotation,
    AnnotationBatch,
    BatchStatus,
    Dataset,
    JobPhase,
    JobStatus,
    Project,
    Sample,
    TrainingJob,
)
from app.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from app.services.annotations import check_batches
from app.services.consensus import Method as ConsensusMethod
from app.services.consensus import TrainOn, create_consensus_batch, reader_selection
from app.services.jobstate import cancel_queued, mark_pending
from app.services.queue import QueueError, TaskQueue
from app.settings import Settings
from app.storage.base import ObjectStore
from gtcorrect.config import ConfigLimits, TrainConfig, preset_config
from gtcorrect.errors import ConfigError

log = logging.getLogger(__name__)


def parse_config(config: dict[str, Any], limits: ConfigLimits) -> TrainConfig:
    """The engine's one validator with this service's limits; a 422 names the field (``config.t.epochs``)."""
    try:
        return TrainConfig.from_dict(config, limits)
    except ConfigError as exc:
        raise InvalidInput(f"config.{exc.field}: {exc.reason}.", field=f"config.{exc.field}") from exc


def _check_active(session: Session, project: Project, most: int) -> None:
    active = session.scalar(
        select(func.count()).where(
            TrainingJob.project_id == project.id,
            TrainingJob.status.in_((JobStatus.queued, JobStatus.running)),
        )
    )
    if (active or 0) >= most:
        raise TooManyRequests(
            f"this project has {active} queued or running jobs, the most allowed at once "
            f"(GTC_MAX_ACTIVE_JOBS={most}); wait for one to finish or cancel one.",
            limit=most,
            retry_after=60,
        )


def several_masks_note(session: Session, dataset: Dataset, batch_ids: list[uuid.UUID] | None) -> str | None:
    """What a job does when the chosen batches hold more than one mask for a sample, in words (None when
    every sample has one): it trains on one mask per sample, the one of the batch that comes last (in
    ``batch_ids``, else the newest)."""
    chosen = select(AnnotationBatch.id, AnnotationBatch.annotator, AnnotationBatch.created_at).where(
        AnnotationBatch.dataset_id == dataset.id, AnnotationBatch.status == BatchStatus.accepted
    )
    if batch_ids is not None:
        chosen = chosen.where(AnnotationBatch.id.in_(batch_ids))
    batches = session.execute(chosen).all()
    if len(batches) < 2:
        return None
    per_sample = (
        select(Annotation.sample_id)
        .where(Annotation.batch_id.in_([b.id for b in batches]))
        .group_by(Annotation.sample_id)
        .having(func.count() > 1)
    )
    shared = session.scalar(select(func.count()).select_from(per_sample.subquery())) or 0
    if not shared:
        return None
    order = {b: i for i, b in enumerate(batch_ids or [])}
    ranked = sorted(batches, key=lambda b: order.get(b.id, 0) if batch_ids else (b.created_at, str(b.id)))
    names = ", ".join(f"{b.annotator!r}" for b in ranked)
    return (
        f"{shared} samples have masks in more than one of the batches ({names}); the job trains on one mask "
        f"per sample, from the batch that comes last ({ranked[-1].annotator!r}: {ranked[-1].id}). To learn "
        'from all of them, train on their consensus ("consensus": "staple" or "majority").'
    )


def count_annotated(session: Session, dataset: Dataset, batch_ids: list[uuid.UUID] | None) -> tuple[int, int]:
    """(samples with an annotation in the chosen batches, all samples of the dataset)."""
    annotated = (
        select(func.count(func.distinct(Annotation.sample_id)))
        .join(AnnotationBatch, AnnotationBatch.id == Annotation.batch_id)
        .where(AnnotationBatch.dataset_id == dataset.id, AnnotationBatch.status == BatchStatus.accepted)
    )
    if batch_ids is not None:
        annotated = annotated.where(Annotation.batch_id.in_(batch_ids))
    total = session.scalar(select(func.count()).where(Sample.dataset_id == dataset.id)) or 0
    return session.scalar(annotated) or 0, total


def create_job(
    session: Session,
    store: ObjectStore,
    project: Project,
    dataset: Dataset,
    batch_ids: list[uuid.UUID] | None,
    config: dict[str, Any],
    settings: Settings,
    preset: str | None = None,
    consensus: ConsensusMethod | None = None,
    train_on: TrainOn = "consensus",
) -> TrainingJob:
    """A queued job row (flushed, not committed). Samples without a chosen annotation are left out.
    ``config`` applies on top of the named ``preset`` (``gtcorrect.config.PRESETS``) when given. With
    ``consensus``, the job judges a new consensus batch of ``batch_ids`` and learns from it, or with
    ``train_on`` "every_reader" from every annotator's mask (``reader_selection``)."""
    if train_on != "consensus" and consensus is None:
        raise InvalidInput(
            f'train_on "{train_on}" needs a consensus to judge: set "consensus" to "staple" or "majority".',
            field="train_on",
        )
    if preset is not None:
        try:
            config = preset_config(preset, config)
        except ConfigError as exc:
            raise InvalidInput(f"{exc} (GET /v1/config/presets).", field="preset") from exc
    cfg = parse_config(config, settings.config_limits())
    _check_active(session, project, settings.max_active_jobs)
    readers: dict[str, Any] | None = None
    if consensus is not None:
        agreed = create_consensus_batch(
            session, store, dataset, batch_ids, consensus, note="made for a training job"
        )
        batch_ids = [agreed.id]
        if train_on == "every_reader":
            readers = reader_selection(agreed)
    if batch_ids is not None:
        batch_ids = list(dict.fromkeys(batch_ids))
        check_batches(session, dataset, batch_ids)
    used, total = count_annotated(session, dataset, batch_ids)
    if used == 0:
        raise InvalidInput(
            f"dataset {dataset.id} has no annotated samples in the chosen batches "
            f"({total} samples in all); upload an annotation batch first."
        )
    selection: dict[str, Any] = (
        {"latest": True} if batch_ids is None else {"batches": [str(b) for b in batch_ids]}
    )
    selection.update(samples_used=used, samples_left_out=total - used, preset=preset)
    shared = several_masks_note(session, dataset, batch_ids)
    if shared:
        selection["notes"] = [shared]
    if consensus is not None:
        selection["train_on"] = train_on
    if readers is not None:
        selection["readers"] = readers
        weights = ", ".join(f"{name} {w:.2f}" for name, w in readers["weights"].items())
        selection.setdefault("notes", []).append(
            "learns from every annotator's own mask, one drawn per sample and epoch in proportion to the "
            f"annotator's weight (mean Dice against the consensus: {weights}); judges the consensus."
        )
    job = TrainingJob(
        project_id=project.id,
        dataset_id=dataset.id,
        batch_ids=selection,
        config=cfg.to_dict(),
        status=JobStatus.queued,
        progress={"phase": JobPhase.queued.value},
    )
    session.add(job)
    session.flush()
    return job


def submit(session: Session, queue: TaskQueue, job: TrainingJob) -> bool:
    """Commit the job, then send its task: a worker must never receive an id it cannot read yet.

    The one place a service commits, because the order matters (docs/ARCHITECTURE.md, "enqueue only after
    commit"). The committed row is the outbox: if the broker refuses, the job stays ``queued`` with a
    ``dispatch: pending`` marker and the sweeper (``app.services.sweeper``) sends it once the broker is
    back. Returns whether the message was sent now.
    """
    session.commit()
    try:
        queue.send_train(job.id)
    except QueueError as exc:
        log.warning("job %s committed but not sent (the sweeper will send it): %s", job.id, exc)
        # Conditional: a sweeper in another process may have sent it and a worker claimed it already.
        session.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job.id, TrainingJob.status == JobStatus.queued)
            .values(progress=mark_pending(job.progress, str(exc)))
        )
        session.commit()
        session.refresh(job)
        return False
    return True


def get_job(session: Session, project: Project, job_id: uuid.UUID) -> TrainingJob:
    job = session.get(TrainingJob, job_id)
    if job is None or job.project_id != project.id:
        raise NotFound(f"job {job_id} not found.")
    return job


def list_jobs(
    session: Session,
    project: Project,
    *,
    dataset_id: uuid.UUID | None,
    status: JobStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[TrainingJob], int]:
    query = select(TrainingJob).where(TrainingJob.project_id == project.id)
    if dataset_id:
        query = query.where(TrainingJob.dataset_id == dataset_id)
    if status:
        query = query.where(TrainingJob.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(TrainingJob.created_at.desc(), TrainingJob.id).limit(limit).offset(offset)
    )
    return list(rows.all()), total


def cancel_job(session: Session, job: TrainingJob) -> TrainingJob:
    """Ask the job to stop. A queued job is cancelled at once; a running one stops at its next check."""
    if job.status in TERMINAL_STATUSES:
        raise Conflict(
            f"job {job.id} is already {job.status.value}; only queued or running jobs can be cancelled."
        )
    job.cancel_requested = True
    session.flush()
    cancel_queued(session, job.id)
    session.refresh(job)
    return job
