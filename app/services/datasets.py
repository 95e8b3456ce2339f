"""Datasets: create, read, list, delete (rows and every object they own)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import TERMINAL_STATUSES, Dataset, Model, Project, Sample, TrainingJob
from app.errors import Conflict, InvalidInput, NotFound
from app.services.uploads import text_problem
from app.storage import keys
from app.storage.base import ObjectStore
from gtcorrect.types import LabelMap

MAX_IMAGE_SETTINGS_BYTES = 16_384  # a few preprocessing options, not a document store


def parse_label_map(label_map: dict[str, str]) -> LabelMap:
    """Validate a label map: integer keys 0..K-1 without gaps, K >= 2, 0 named "background"."""
    try:
        indices: dict[str | int, str] = {int(k): str(v) for k, v in label_map.items()}
    except ValueError as exc:
        raise InvalidInput(
            f"label_map keys must be class indices, got {sorted(label_map)}.", field="label_map"
        ) from exc
    if indices.get(0, "").strip().lower() != "background":
        raise InvalidInput(
            f"label_map must map 0 to 'background', got {indices.get(0)!r}.", field="label_map"
        )
    if any(not name.strip() for name in indices.values()):
        raise InvalidInput("label_map class names must not be empty.", field="label_map")
    for name in indices.values():
        problem = text_problem(name)
        if problem is not None:
            raise InvalidInput(f"label_map class name {problem}.", field="label_map")
    try:
        return LabelMap.from_dict(indices)
    except ValueError as exc:
        raise InvalidInput(f"label_map: {exc}", field="label_map") from exc


def label_map_of(dataset: Dataset) -> LabelMap:
    mapping: dict[str | int, str] = {k: str(v) for k, v in dataset.label_map.items()}
    return LabelMap.from_dict(mapping)


def check_name(name: str) -> str:
    """A dataset name as given, or ``InvalidInput`` naming what is wrong with it."""
    problem = text_problem(name)
    if problem is not None:
        raise InvalidInput(f"name {problem}.", field="name")
    return name


def create_dataset(
    session: Session, project: Project, name: str, label_map: dict[str, str], image_settings: dict[str, Any]
) -> Dataset:
    labels = parse_label_map(label_map)
    name = check_name(name)
    size = len(json.dumps(image_settings))
    if size > MAX_IMAGE_SETTINGS_BYTES:
        raise InvalidInput(
            f"image_settings is {size} bytes of JSON, above the limit of {MAX_IMAGE_SETTINGS_BYTES}.",
            field="image_settings",
        )
    if session.scalar(select(Dataset.id).where(Dataset.project_id == project.id, Dataset.name == name)):
        raise Conflict(f"a dataset named {name!r} already exists in this project.")
    dataset = Dataset(
        project_id=project.id, name=name, label_map=labels.to_dict(), image_settings=image_settings
    )
    session.add(dataset)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent request took the name between the check and the insert
        raise Conflict(f"a dataset named {name!r} already exists in this project.") from exc
    return dataset


def get_dataset(session: Session, project: Project, dataset_id: uuid.UUID) -> Dataset:
    """The dataset, if it belongs to ``project``; other projects' datasets are reported as missing."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.project_id != project.id:
        raise NotFound(f"dataset {dataset_id} not found.")
    return dataset


def sample_count(session: Session, dataset_id: uuid.UUID) -> int:
    return session.scalar(select(func.count()).where(Sample.dataset_id == dataset_id)) or 0


def list_datasets(
    session: Session, project: Project, *, name: str | None, limit: int, offset: int
) -> tuple[list[Dataset], int]:
    query = select(Dataset).where(Dataset.project_id == project.id)
    if name:
        query = query.where(Dataset.name.ilike(f"%{name}%"))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Dataset.created_at, Dataset.id).limit(limit).offset(offset)).all()
    return list(rows), total


def delete_dataset(session: Session, store: ObjectStore, dataset: Dataset) -> None:
    """Delete the dataset, its samples, batches, jobs, results and models, rows and objects.

    Refused while a job of the dataset is queued or running: its worker would write into deleted keys.
    """
    jobs = session.scalars(select(TrainingJob).where(TrainingJob.dataset_id == dataset.id)).all()
    active = [j for j in jobs if j.status not in TERMINAL_STATUSES]
    if active:
        raise Conflict(
            f"dataset {dataset.id} has {len(active)} unfinished job(s) ({active[0].id}); cancel them first."
        )
    model_keys = session.scalars(select(Model.weights_key).where(Model.dataset_id == dataset.id)).all()
    prefixes = [keys.dataset_prefix(dataset.project_id, dataset.id)]
    prefixes += [keys.job_prefix(dataset.project_id, j.id) for j in jobs]
    session.delete(dataset)
    session.flush()
    # After the flush, so a refused delete leaves the objects; a failed commit after this is rare and
    # leaves rows whose objects are gone, which the API reports as missing objects, never as wrong data.
    for prefix in prefixes:
        store.delete_prefix(prefix)
    for key in model_keys:
        store.delete(key)
