"""Fetch a job's training data: the chosen annotation of every sample, its image and mask objects.

Shape legend: N samples used; H, W a sample's original height and width; S the training size.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Annotation, AnnotationBatch, BatchStatus, Dataset, Sample
from app.errors import InvalidInput
from app.services.consensus import reader_panel
from app.storage.base import ObjectNotFound, ObjectStore
from gtcorrect.data import prepare_images, read_image, read_mask, resize_mask
from gtcorrect.types import LabelMap, ReaderMasks, TrainingData


class JobInputError(ValueError):
    """The job's data cannot be assembled (no annotations, a missing or unreadable object)."""


@dataclass(frozen=True)
class SampleRef:
    """One training sample and the annotation version it was trained with."""

    sample_id: uuid.UUID
    annotation_id: uuid.UUID
    annotation_key: str
    height: int
    width: int
    annotator: str  # of the annotation's batch


@dataclass
class JobInputs:
    """data: ``TrainingData`` (N images at S x S, ``ids`` = sample ids as strings); refs aligned with it."""

    data: TrainingData
    refs: list[SampleRef]
    label_map: LabelMap


def _selected_batches(session: Session, dataset_id: uuid.UUID, selection: dict[str, Any]) -> list[uuid.UUID]:
    """Batch ids in precedence order (a later batch's mask wins for a sample in several)."""
    chosen = selection.get("batches")
    if chosen:
        ids = [uuid.UUID(str(b)) for b in chosen]
        rows = session.execute(
            select(AnnotationBatch.id, AnnotationBatch.status).where(
                AnnotationBatch.id.in_(ids), AnnotationBatch.dataset_id == dataset_id
            )
        ).all()
        status = {row[0]: row[1] for row in rows}
        for batch_id in ids:
            if batch_id not in status:
                raise JobInputError(f"annotation batch {batch_id} does not exist in dataset {dataset_id}.")
            if status[batch_id] != BatchStatus.accepted:
                raise JobInputError(f"annotation batch {batch_id} is {status[batch_id]}, not accepted.")
        return ids
    # "latest": every accepted batch, oldest first, so each sample ends up with its newest mask.
    return list(
        session.scalars(
            select(AnnotationBatch.id)
            .where(AnnotationBatch.dataset_id == dataset_id, AnnotationBatch.status == BatchStatus.accepted)
            .order_by(AnnotationBatch.created_at, AnnotationBatch.id)
        )
    )


def select_annotations(
    session: Session, dataset_id: uuid.UUID, selection: dict[str, Any]
) -> list[tuple[Sample, Annotation]]:
    """(sample, annotation) pairs for the job's selection, ordered by sample file name."""
    batches = _selected_batches(session, dataset_id, selection)
    rank = {batch_id: i for i, batch_id in enumerate(batches)}
    rows = session.execute(
        select(Sample, Annotation)
        .join(Annotation, Annotation.sample_id == Sample.id)
        .where(Sample.dataset_id == dataset_id, Annotation.batch_id.in_(batches))
    ).all()
    best: dict[uuid.UUID, tuple[Sample, Annotation]] = {}
    for sample, annotation in rows:
        current = best.get(sample.id)
        if current is None or rank[annotation.batch_id] > rank[current[1].batch_id]:
            best[sample.id] = (sample, annotation)
    if not best:
        raise JobInputError(f"dataset {dataset_id} has no annotated samples in the selected batches.")
    return sorted(best.values(), key=lambda pair: (pair[0].file_name, str(pair[0].id)))


def _reader_masks(
    session: Session,
    store: ObjectStore,
    dataset: Dataset,
    pairs: list[tuple[Sample, Annotation]],
    readers: dict[str, Any],
    num_classes: int,
    image_size: int,
) -> ReaderMasks:
    """Every annotator's own mask of the job's samples, from the consensus's source batches, chosen as the
    consensus chose them (``reader_panel``), with their weights."""
    try:
        panel = reader_panel(session, dataset, [uuid.UUID(str(b)) for b in readers["batches"]])
    except InvalidInput as exc:
        raise JobInputError(f"the readers of the job's consensus: {exc}") from exc
    by_sample = {sample.id: masks for sample, masks in zip(panel.samples, panel.masks, strict=True)}
    weights: dict[str, float] = readers["weights"]
    stacks: list[np.ndarray] = []
    drawn: list[list[float]] = []
    for sample, _ in pairs:
        masks = by_sample.get(sample.id, [])
        if len(masks) < 2:  # one reader: the consensus is their mask
            stacks.append(np.zeros((0, image_size, image_size), np.uint8))
            drawn.append([])
            continue
        names = [panel.annotators[a] for a, _ in masks]
        read = [
            read_mask(
                _get(store, key, f"{name}'s mask of sample {sample.file_name!r} ({sample.id})"),
                num_classes=num_classes,
                name=f"{name}'s mask of {sample.file_name}",
            )
            for name, (_, key) in zip(names, masks, strict=True)
        ]
        stacks.append(np.stack([resize_mask(m, image_size) for m in read]))
        drawn.append([float(weights.get(name, 1.0)) for name in names])
    return ReaderMasks.of(stacks, drawn)


def _get(store: ObjectStore, key: str, what: str) -> bytes:
    try:
        return store.get(key)
    except ObjectNotFound as exc:
        raise JobInputError(f"{what}: object {key!r} is missing from the object store.") from exc


def fetch_inputs(
    session: Session, store: ObjectStore, dataset_id: uuid.UUID, selection: dict[str, Any], image_size: int
) -> JobInputs:
    """Read the selected samples and masks and bring them to ``image_size``.

    Same policy as ``gtcorrect.data.prepare``, one sample at a time, so only the S x S arrays stay in
    memory (full-size originals of a large dataset would not fit).
    """
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise JobInputError(f"dataset {dataset_id} does not exist.")
    names: dict[str | int, str] = {str(k): str(v) for k, v in dataset.label_map.items()}
    label_map = LabelMap.from_dict(names)
    pairs = select_annotations(session, dataset_id, selection)
    channels = 3 if any(sample.channels == 3 for sample, _ in pairs) else 1
    images = np.empty((len(pairs), channels, image_size, image_size), dtype=np.float32)
    masks = np.empty((len(pairs), image_size, image_size), dtype=np.int64)
    refs: list[SampleRef] = []
    batches = select(AnnotationBatch.id, AnnotationBatch.annotator).where(
        AnnotationBatch.dataset_id == dataset_id
    )
    annotators = {batch_id: name for batch_id, name in session.execute(batches)}
    for i, (sample, annotation) in enumerate(pairs):
        what = f"sample {sample.file_name!r} ({sample.id})"
        image = read_image(_get(store, sample.object_key, what), name=sample.file_name)
        mask_bytes = _get(store, annotation.object_key, f"annotation {annotation.id} of {what}")
        mask = read_mask(mask_bytes, num_classes=label_map.num_classes, name=f"mask of {sample.file_name}")
        if image.shape[:2] != mask.shape:
            raise JobInputError(
                f"{what}: image size {image.shape[1]}x{image.shape[0]} differs from its mask "
                f"{mask.shape[1]}x{mask.shape[0]} (annotation {annotation.id})."
            )
        images[i] = prepare_images([image], size=image_size, channels=channels)[0]
        masks[i] = resize_mask(mask, image_size)
        refs.append(
            SampleRef(
                sample.id,
                annotation.id,
                annotation.object_key,
                image.shape[0],
                image.shape[1],
                annotators[annotation.batch_id],
            )
        )
    data = TrainingData(
        images=images,
        masks=masks,
        ids=[str(r.sample_id) for r in refs],
        label_map=label_map,
        original_sizes=[(r.height, r.width) for r in refs],
        annotators=[r.annotator for r in refs],  # the engine looks for a biased annotator (gtcorrect.bias)
        readers=None
        if "readers" not in selection
        else _reader_masks(
            session, store, dataset, pairs, selection["readers"], label_map.num_classes, image_size
        ),
    )
    return JobInputs(data=data, refs=refs, label_map=label_map)
