"""Samples: validate uploaded images, store them as PNG, report each file.

Policy: all or nothing. Every file is decoded before anything is written; one bad file rejects the
upload with a 422 naming each bad file, and no row or object is created.

Memory: one image at a time. The first pass decodes each file to validate it and keeps only its shape;
the second decodes each new image again, encodes it as PNG and stores it before the next. A request
holds one decoded image and one PNG, whatever the number or size of the files it uploads.
"""

from __future__ import annotations

import uuid

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Dataset, Sample
from app.errors import Conflict, InvalidInput, NotFound
from app.services import unit, volumes
from app.services.uploads import (
    Blob,
    Outcome,
    UploadLimits,
    duplicate_names,
    encode_png,
    expand,
    header_problem,
    name_key,
    reason,
)
from app.storage import keys
from app.storage.base import ObjectStore
from gtcorrect.data import read_image


def _decode(blob: Blob, limits: UploadLimits) -> np.ndarray:
    return read_image(blob.data, name=blob.name, max_pixels=limits.max_image_pixels)


def _shape(blob: Blob, limits: UploadLimits) -> tuple[int, int, int]:
    with limits.decoding(blob):
        h, w, c = _decode(blob, limits).shape
    return int(h), int(w), int(c)


def _png(blob: Blob, limits: UploadLimits) -> bytes:
    with limits.decoding(blob):
        return encode_png(_decode(blob, limits))


def _check_all(
    blobs: list[Blob], limits: UploadLimits, problems: list[dict[str, str]]
) -> dict[str, tuple[int, int, int]]:
    """Decode every file, one at a time; raise one ``InvalidInput`` naming every bad file (and the
    ``problems`` found before). Result: name -> (H, W, C) shape (the pixels are dropped at once)."""
    shapes: dict[str, tuple[int, int, int]] = {}
    for blob in blobs:
        refused = header_problem(blob, limits.max_image_pixels)
        if refused is not None:
            problems.append({"file": blob.name, "reason": refused})
            continue
        try:
            shapes[blob.name] = _shape(blob, limits)
        except ValueError as exc:
            problems.append({"file": blob.name, "reason": reason(exc, blob.name)})
    if problems:
        raise InvalidInput(
            f"{len(problems)} files were rejected; nothing was stored.",
            invalid_files=problems,
        )
    return shapes


def upload_images(
    session: Session, store: ObjectStore, dataset: Dataset, files: list[Blob], limits: UploadLimits
) -> list[Outcome]:
    """Add the images in ``files`` (plain files or zips) to ``dataset``; duplicates of stored content are
    reported, not stored again. A file name already used by different content is rejected."""
    stacks, blobs = volumes.split(expand(files, limits))
    shapes = _check_all(blobs, limits, volumes.check_images(stacks, limits) + duplicate_names(stacks + blobs))
    existing = {
        row.sha256: row
        for row in session.scalars(select(Sample).where(Sample.dataset_id == dataset.id)).all()
    }
    digests = {b.name: b.sha256() for b in blobs}
    _check_name_clashes(blobs, digests, existing)
    outcomes: list[Outcome] = []
    pending: list[tuple[str, Blob]] = []
    for blob in blobs:
        digest = digests[blob.name]
        if digest in existing:
            outcomes.append(Outcome.duplicate(blob.name, existing[digest].id, existing[digest].file_name))
            continue
        height, width, channels = shapes[blob.name]
        sample = Sample(
            id=uuid.uuid4(),
            dataset_id=dataset.id,
            sha256=digest,
            file_name=blob.name,
            height=height,
            width=width,
            channels=channels,
            object_key="",
        )
        sample.object_key = keys.sample(dataset.project_id, dataset.id, sample.id)
        session.add(sample)
        existing[digest] = sample
        pending.append((sample.object_key, blob))
        outcomes.append(Outcome(blob.name, "created", str(sample.id)))
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent upload stored the same content or name first
        raise Conflict("another upload added some of these images at the same time; retry.") from exc
    unit.delete_on_rollback(session, store, [key for key, _ in pending])
    for key, blob in pending:  # decode, encode and store one image at a time
        store.put(key, _png(blob, limits), content_type="image/png")
    return outcomes + volumes.add_images(session, store, dataset, stacks, limits)


def _check_name_clashes(blobs: list[Blob], digests: dict[str, str], existing: dict[str, Sample]) -> None:
    """Reject files whose name is taken in the dataset by different content (same content = duplicate)."""
    taken = {name_key(s.file_name): s for s in existing.values()}
    clashes = [
        {"file": b.name, "reason": f"a different image named {taken[name_key(b.name)].file_name!r} exists"}
        for b in blobs
        if name_key(b.name) in taken and taken[name_key(b.name)].sha256 != digests[b.name]
    ]
    if clashes:
        raise InvalidInput(
            f"{len(clashes)} file names are already used in this dataset.", invalid_files=clashes
        )


def get_sample(session: Session, dataset: Dataset, sample_id: uuid.UUID) -> Sample:
    sample = session.get(Sample, sample_id)
    if sample is None or sample.dataset_id != dataset.id:
        raise NotFound(f"sample {sample_id} not found in dataset {dataset.id}.")
    return sample


def list_samples(
    session: Session, dataset: Dataset, *, file_name: str | None, limit: int, offset: int
) -> tuple[list[Sample], int]:
    query = select(Sample).where(Sample.dataset_id == dataset.id)
    if file_name:
        query = query.where(Sample.file_name.ilike(f"%{file_name}%"))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Sample.file_name).limit(limit).offset(offset)).all()
    return list(rows), total
