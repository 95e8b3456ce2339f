"""Deleting what a user no longer needs: a job, a model, an annotation batch, a sample; renaming a dataset.

Each delete removes the rows and the stored objects they own, and is refused (409, naming what depends on
it) where it would leave something behind that still points at it: a job whose model is registered, a
batch or sample a job trained on, a job that is still queued or running. Objects are removed after the
rows are flushed, so a refused delete leaves every object in place (as ``datasets.delete_dataset``).
"""

from __future__ import annotations

import uuid

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.db.models import (
    TERMINAL_STATUSES,
    Annotation,
    AnnotationBatch,
    Dataset,
    Model,
    NoiseFlag,
    Project,
    Sample,
    TrainingJob,
)
from app.errors import Conflict
from app.services.datasets import check_name
from app.storage import keys
from app.storage.base import ObjectStore


def delete_job(session: Session, store: ObjectStore, job: TrainingJob) -> None:
    """A finished, failed or cancelled job with its report, plots and checkpoints."""
    if job.status not in TERMINAL_STATUSES:
        raise Conflict(
            f"job {job.id} is {job.status.value}; cancel it first (POST /v1/jobs/{job.id}/cancel)."
        )
    model = session.scalar(select(Model.id).where(Model.job_id == job.id))
    if model is not None:
        raise Conflict(
            f"job {job.id} registered model {model}, which segmentation may still use; delete the model "
            f"first (DELETE /v1/models/{model}).",
            model_id=str(model),
        )
    prefix = keys.job_prefix(job.project_id, job.id)
    session.delete(job)
    session.flush()
    store.delete_prefix(prefix)


def delete_model(session: Session, store: ObjectStore, model: Model) -> None:
    """A registered model and its weights; the job that trained it stays."""
    key = model.weights_key
    session.delete(model)
    session.flush()
    store.delete(key)


def _users(session: Session, annotation_ids: Select[uuid.UUID]) -> list[uuid.UUID]:
    """Jobs whose report holds one of these annotations (it trained on them), oldest first."""
    return list(
        session.scalars(
            select(NoiseFlag.job_id)
            .where(NoiseFlag.annotation_id.in_(annotation_ids))
            .distinct()
            .order_by(NoiseFlag.job_id)
        )
    )


def delete_batch(session: Session, store: ObjectStore, batch: AnnotationBatch, project: Project) -> None:
    """An annotation batch with its masks, unless a job trained on them."""
    used = _users(session, select(Annotation.id).where(Annotation.batch_id == batch.id))
    if used:
        raise Conflict(
            f"annotation batch {batch.id} was trained on by {len(used)} job(s) ({used[0]}); delete those "
            "jobs first, their reports point at these masks.",
            job_ids=[str(j) for j in used],
        )
    masks = list(session.scalars(select(Annotation.object_key).where(Annotation.batch_id == batch.id)))
    session.delete(batch)
    session.flush()
    for key in masks:
        store.delete(key)


def delete_sample(session: Session, store: ObjectStore, sample: Sample) -> None:
    """A sample (its image) and every mask of it, unless a job trained on it."""
    used = _users(session, select(Annotation.id).where(Annotation.sample_id == sample.id))
    if used:
        raise Conflict(
            f"sample {sample.id} ({sample.file_name}) was trained on by {len(used)} job(s) ({used[0]}); "
            "delete those jobs first, their reports point at it.",
            job_ids=[str(j) for j in used],
        )
    objects = [sample.object_key]
    objects += session.scalars(select(Annotation.object_key).where(Annotation.sample_id == sample.id))
    session.delete(sample)
    session.flush()
    for key in objects:
        store.delete(key)


def rename_dataset(session: Session, dataset: Dataset, name: str) -> Dataset:
    """A new name, under the same rules as a new dataset's; 409 when the project has one of that name."""
    name = check_name(name)
    if name != dataset.name:
        taken = session.scalar(
            select(Dataset.id).where(Dataset.project_id == dataset.project_id, Dataset.name == name)
        )
        if taken is not None:
            raise Conflict(f"a dataset named {name!r} already exists in this project.")
        dataset.name = name
        session.flush()
    return dataset
