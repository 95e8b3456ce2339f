"""Deleting what a user no longer needs: a job, a model, an annotation batch, a sample; renaming a dataset.

Each delete removes the rows and the stored objects they own, and is refused (409, naming what depends on
it) where it would leave something behind that still points at it: a job whose model is registered, a
batch or sample a job trained on, a job that is still queued or running. Objects are removed after the
rows are flushed, so a refused delete leaves every object in place (as ``datasets.delete_dataset``).
"""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, Select, select
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
    Volume,
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


def _delete_untrained(
    session: Session,
    store: ObjectStore,
    row: object,
    annotations: ColumnElement[bool],
    what: str,
    it: str,
    objects: list[str] | None = None,
) -> None:
    """Delete ``row`` and the mask objects of ``annotations`` (plus ``objects``), or 409 naming the jobs
    that trained on those masks (their reports point at them)."""
    used = _users(session, select(Annotation.id).where(annotations))
    if used:
        raise Conflict(
            f"{what} was trained on by {len(used)} job(s) ({used[0]}); delete those jobs first, their "
            f"reports point at {it}.",
            job_ids=[str(j) for j in used],
        )
    keys = [*(objects or []), *session.scalars(select(Annotation.object_key).where(annotations))]
    session.delete(row)
    session.flush()
    for key in keys:
        store.delete(key)


def delete_batch(session: Session, store: ObjectStore, batch: AnnotationBatch, project: Project) -> None:
    """An annotation batch with its masks, unless a job trained on them."""
    _delete_untrained(
        session,
        store,
        batch,
        Annotation.batch_id == batch.id,
        f"annotation batch {batch.id}",
        "these masks",
    )


def delete_sample(session: Session, store: ObjectStore, sample: Sample) -> None:
    """A sample (its image) and every mask of it, unless a job trained on it; a volume's slice goes with
    its volume only."""
    if sample.volume_id is not None:
        raise Conflict(
            f"sample {sample.id} ({sample.file_name}) is a slice of volume {sample.volume_id}; delete the "
            f"volume (DELETE /v1/datasets/{sample.dataset_id}/volumes/{sample.volume_id}).",
            volume_id=str(sample.volume_id),
        )
    _delete_untrained(
        session,
        store,
        sample,
        Annotation.sample_id == sample.id,
        f"sample {sample.id} ({sample.file_name})",
        "it",
        [sample.object_key],
    )


def delete_volume(session: Session, store: ObjectStore, volume: Volume) -> None:
    """An image volume, its slices and every mask of them, unless a job trained on one."""
    slices = select(Sample.id).where(Sample.volume_id == volume.id)
    images = list(session.scalars(select(Sample.object_key).where(Sample.volume_id == volume.id)))
    _delete_untrained(
        session,
        store,
        volume,
        Annotation.sample_id.in_(slices),
        f"volume {volume.id} ({volume.file_name})",
        "its slices",
        [volume.object_key, *images],
    )


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
