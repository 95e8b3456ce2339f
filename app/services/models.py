"""Trained models: read, list, and pick the latest version of a dataset."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Model, Project
from app.errors import InvalidInput, NotFound
from app.services.recent import RecentRows


def get_model(
    session: Session, project: Project, model_id: uuid.UUID, recent: RecentRows[Model] | None = None
) -> Model:
    """The model ``model_id`` of ``project``; with ``recent``, one read a moment ago is not read again."""
    model = recent.get(session, model_id) if recent is not None else None
    if model is None:
        model = session.get(Model, model_id)
        if model is not None and recent is not None:
            model = recent.remember(session, model_id, model)
    if model is None or model.project_id != project.id:
        raise NotFound(f"model {model_id} not found.")
    return model


def latest_model(session: Session, project: Project, dataset_id: uuid.UUID) -> Model:
    """The highest version trained on ``dataset_id``."""
    model = session.scalar(
        select(Model)
        .where(Model.project_id == project.id, Model.dataset_id == dataset_id)
        .order_by(Model.version.desc())
        .limit(1)
    )
    if model is None:
        raise NotFound(f"dataset {dataset_id} has no trained model yet.")
    return model


def list_models(
    session: Session, project: Project, *, dataset_id: uuid.UUID | None, limit: int, offset: int
) -> tuple[list[Model], int]:
    query = select(Model).where(Model.project_id == project.id)
    if dataset_id:
        query = query.where(Model.dataset_id == dataset_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Model.created_at.desc(), Model.version.desc()).limit(limit).offset(offset)
    )
    return list(rows.all()), total


def resolve_model(
    session: Session,
    project: Project,
    ref: str,
    dataset_id: uuid.UUID | None,
    recent: RecentRows[Model] | None = None,
) -> Model:
    """A model named by id (looked up through ``recent`` when given), or ``latest`` of ``dataset_id``
    (always read: a new model may have arrived)."""
    if ref == "latest":
        if dataset_id is None:
            raise InvalidInput("model 'latest' needs ?dataset_id=...", field="dataset_id")
        return latest_model(session, project, dataset_id)
    try:
        model_id = uuid.UUID(ref)
    except ValueError as exc:
        raise InvalidInput(f"model must be a model id or 'latest', got {ref!r}.", field="model") from exc
    return get_model(session, project, model_id, recent)
