"""Record a finished job's results in one transaction: noise flags, corrected masks, GMM rounds, the
self-assessment and the model row.

Called by the worker after every object (corrected masks, plots, model file) is in the store, so a
committed ``succeeded`` job never points at a missing object. Re-running replaces the job's rows
(delete, then insert), which makes recording idempotent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.db.models import (
    AnnotatorStat,
    CorrectedMask,
    Dataset,
    GmmRound,
    JobStatus,
    Model,
    NoiseFlag,
    TrainingJob,
)
from app.errors import Conflict, NotFound
from app.services import jobstate

# Model ids derive from the job id, so a re-run writes the same model key instead of a second file.
_MODEL_NAMESPACE = uuid.UUID("5b0c6a8e-8f0d-4c59-a1e3-6f4f2d7c9b10")


class JobNotOwned(Conflict):
    """The job is no longer running under this worker's attempt (reclaimed, cancelled or finished)."""


class CancelledBeforeCommit(Conflict):
    """A cancel was asked for while the job stored its results: it ends cancelled, not succeeded."""


@dataclass(frozen=True)
class SampleVerdict:
    """The G stage's verdict on one sample's annotation."""

    sample_id: uuid.UUID
    annotation_id: uuid.UUID
    clean_probability: float
    flagged: bool
    loss: float
    round_decided: int  # -1: held back for validation
    held_out: bool = False
    decided_by: str | None = None  # the evidence that raised the mask's doubt most
    class_dice: list[float | None] | None = None  # per foreground class, the given mask to the prediction
    withheld_because: str | None = None  # why the flagged mask's correction was not proposed


@dataclass(frozen=True)
class CorrectedRecord:
    """A corrected mask already written to the store; ``changed_fraction`` at the original size."""

    sample_id: uuid.UUID
    object_key: str
    changed_fraction: float
    changed_pixels: int


@dataclass(frozen=True)
class JobResults:
    verdicts: list[SampleVerdict]
    corrected: list[CorrectedRecord]
    weights_key: str
    metrics: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)  # GmmRound columns per fit
    annotators: list[dict[str, Any]] = field(default_factory=list)  # AnnotatorStat columns per annotator


def model_id_for_job(job_id: uuid.UUID) -> uuid.UUID:
    """The id of the model a job registers (deterministic: re-runs overwrite, never duplicate)."""
    return uuid.uuid5(_MODEL_NAMESPACE, str(job_id))


def _owned_job(session: Session, job_id: uuid.UUID, attempt: int) -> TrainingJob:
    # Row lock (Postgres): a concurrent cancel or reclaim waits for this transaction, or we wait for it.
    job = session.scalar(select(TrainingJob).where(TrainingJob.id == job_id).with_for_update())
    if job is None:
        raise NotFound(f"training job {job_id} does not exist.")
    if job.status != JobStatus.running or job.attempt != attempt:
        raise JobNotOwned(
            f"training job {job_id} is {job.status} at attempt {job.attempt}; "
            f"this worker ran attempt {attempt}."
        )
    return job


def _next_version(session: Session, dataset_id: uuid.UUID, job_id: uuid.UUID) -> int:
    previous = session.scalar(select(Model.version).where(Model.job_id == job_id))
    if previous is not None:
        return int(previous)
    # Locking the dataset row serialises version numbering between jobs finishing at the same time.
    session.execute(select(Dataset.id).where(Dataset.id == dataset_id).with_for_update())
    latest = session.scalar(select(func.max(Model.version)).where(Model.dataset_id == dataset_id))
    return int(latest or 0) + 1


def record_results(session: Session, job_id: uuid.UUID, attempt: int, results: JobResults) -> Model:
    """Replace the job's result rows, register its model and mark it succeeded; the caller commits.

    Raises ``JobNotOwned`` when the job is not ``running`` at ``attempt``, and ``CancelledBeforeCommit``
    when a cancel was asked for meanwhile (nothing is written): an accepted cancel is never overtaken.
    """
    job = _owned_job(session, job_id, attempt)
    if job.cancel_requested:
        raise CancelledBeforeCommit(f"training job {job_id} was cancelled before its results were stored.")
    version = _next_version(session, job.dataset_id, job_id)
    session.execute(delete(NoiseFlag).where(NoiseFlag.job_id == job_id))
    session.execute(delete(CorrectedMask).where(CorrectedMask.job_id == job_id))
    session.execute(delete(Model).where(Model.job_id == job_id))
    session.execute(delete(GmmRound).where(GmmRound.job_id == job_id))
    session.execute(delete(AnnotatorStat).where(AnnotatorStat.job_id == job_id))
    session.add_all(GmmRound(job_id=job_id, **r) for r in results.rounds)
    session.add_all(AnnotatorStat(job_id=job_id, **a) for a in results.annotators)
    session.add_all(
        NoiseFlag(
            job_id=job_id,
            sample_id=v.sample_id,
            annotation_id=v.annotation_id,
            clean_probability=float(v.clean_probability),
            flagged=bool(v.flagged),
            loss=float(v.loss),
            round_decided=int(v.round_decided),
            held_out=bool(v.held_out),
            decided_by=v.decided_by,
            class_dice=v.class_dice,
            withheld_because=v.withheld_because,
        )
        for v in results.verdicts
    )
    session.add_all(
        CorrectedMask(
            job_id=job_id,
            sample_id=c.sample_id,
            object_key=c.object_key,
            changed_fraction=c.changed_fraction,
            changed_pixels=c.changed_pixels,
        )
        for c in results.corrected
    )
    model = Model(
        id=model_id_for_job(job_id),
        project_id=job.project_id,
        dataset_id=job.dataset_id,
        job_id=job_id,
        weights_key=results.weights_key,
        metrics=dict(results.metrics),
        version=version,
    )
    session.add(model)
    job.progress = dict(results.progress)
    job.quality = None if results.quality is None else dict(results.quality)
    jobstate.mark_succeeded(job)
    session.flush()
    return model
