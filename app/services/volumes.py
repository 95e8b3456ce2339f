"""NIfTI volumes in the service: stored as uploaded, trained slice-wise.

An image volume (``.nii.gz`` or ``.nii``) is kept as sent (its header: affine, spacing, orientation) and
cut into its slices along ``gtcorrect.volumes.SLICE_AXIS``, each a sample named ``<volume>_s012.png``
(8-bit grey, one grey scale per volume), so every job, report and review works on slices as on 2D
images. A label volume uploaded as an annotation batch becomes one mask per slice, matched by name. The
way back: a job's masks of one volume as a label volume in the image volume's space
(``corrected_volume``), its verdict per volume (``volume_verdicts``), and a segmentation of an uploaded
volume (``app.services.inference``).

Limits: ``max_image_pixels`` caps a volume's voxels, read from its header before any voxel; a volume
holds the process's decode budget for its file, its voxels and what windowing them holds while read.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Annotation, CorrectedMask, Dataset, NoiseFlag, Sample, TrainingJob, Volume
from app.errors import Conflict, InvalidInput, NotFound
from app.services import unit
from app.services.datasets import label_map_of
from app.services.objects import read_object
from app.services.reports import require_succeeded
from app.services.uploads import (
    Blob,
    Outcome,
    UploadLimits,
    encode_png,
    name_key,
    reason,
)
from app.storage import keys
from app.storage.base import ObjectStore
from gtcorrect import volumes as nifti
from gtcorrect.data import mask_to_png, read_mask
from gtcorrect.types import LabelMap

GZIP = "application/gzip"


def is_volume(blob: Blob) -> bool:
    """A NIfTI volume, by its name (``.nii.gz`` or ``.nii``)."""
    return nifti.is_volume(blob.name)


def name(blob: Blob) -> str:
    """A volume's name: its file name without the NIfTI ending."""
    return nifti.volume_name(blob.name)


def split(blobs: list[Blob]) -> tuple[list[Blob], list[Blob]]:
    """(the NIfTI volumes, the other files) of an upload."""
    return [b for b in blobs if is_volume(b)], [b for b in blobs if not is_volume(b)]


@contextmanager
def reading(blob: Blob, limits: UploadLimits) -> Iterator[nifti.Volume]:
    """The volume of ``blob``, read under the decode budget (what its header declares: the file, the
    voxels and what windowing them holds); ``ValueError`` naming the file when it is not a volume."""
    with blob.open() as f:
        header = nifti.read_header(f, blob.name, limits.max_image_pixels)
    held = blob.size + header.voxels * (header.itemsize + nifti.HELD_BYTES_PER_VOXEL)
    with limits.holding(held), blob.open() as f:
        yield nifti.read_volume_stream(f, blob.name, limits.max_image_pixels)


def check_images(blobs: list[Blob], limits: UploadLimits) -> list[dict[str, str]]:
    """Read every image volume once (one at a time): the problems of those that cannot be stored (two of
    one name, ``case.nii`` and ``case.nii.gz``, included)."""
    problems = []
    seen: set[str] = set()
    for blob in blobs:
        key = name_key(name(blob))
        if key in seen:
            problems.append({"file": blob.name, "reason": "another volume of this upload has the same name"})
        seen.add(key)
        try:
            with reading(blob, limits):
                pass
        except ValueError as exc:
            problems.append({"file": blob.name, "reason": reason(exc, blob.name)})
    return problems


def add_images(
    session: Session, store: ObjectStore, dataset: Dataset, blobs: list[Blob], limits: UploadLimits
) -> list[Outcome]:
    """Store checked image volumes (``check_images``) as uploaded, and their slices as samples; a volume
    already stored (same content) is a duplicate, a name taken by a different volume is refused."""
    existing = {v.sha256: v for v in session.scalars(select(Volume).where(Volume.dataset_id == dataset.id))}
    names = {name_key(v.name): v for v in existing.values()}
    digests = {b.name: b.sha256() for b in blobs}
    clashes = [
        {"file": b.name, "reason": f"a different volume named {names[key].file_name!r} exists"}
        for b in blobs
        if (key := name_key(name(b))) in names and names[key].sha256 != digests[b.name]
    ]
    if clashes:
        raise InvalidInput(
            f"{len(clashes)} volume names are already used in this dataset.", invalid_files=clashes
        )
    outcomes = []
    for blob in blobs:
        digest = digests[blob.name]
        if digest in existing:
            outcomes.append(Outcome.duplicate(blob.name, existing[digest].id, existing[digest].file_name))
            continue
        with reading(blob, limits) as volume:
            row = _store_volume(session, store, dataset, blob, digest, volume)
        existing[digest] = row
        outcomes.append(Outcome(blob.name, "created", str(row.id), slices=row.slices))
    return outcomes


def _store_volume(
    session: Session, store: ObjectStore, dataset: Dataset, blob: Blob, digest: str, volume: nifti.Volume
) -> Volume:
    row = Volume(
        id=uuid.uuid4(),
        dataset_id=dataset.id,
        name=volume.name,
        file_name=blob.name,
        sha256=digest,
        shape=[int(s) for s in volume.data.shape],
        spacing=[float(z) for z in volume.image.header.get_zooms()[:3]],
        object_key="",
    )
    row.object_key = keys.volume(dataset.project_id, dataset.id, row.id, blob.name)
    session.add(row)
    try:
        session.flush()  # before its slices: without an ORM relationship the insert order is ours
    except IntegrityError as exc:  # a concurrent upload stored the same volume first
        raise Conflict(f"{blob.name}: another upload added this volume at the same time; retry.") from exc
    slices = nifti.image_slices(volume)
    samples = []
    for k, image in enumerate(slices):
        sample = Sample(
            id=uuid.uuid4(),
            dataset_id=dataset.id,
            sha256=hashlib.sha256(f"{digest}:{k}".encode()).hexdigest(),
            file_name=f"{nifti.slice_id(volume.name, k)}.png",
            height=int(image.shape[0]),
            width=int(image.shape[1]),
            channels=1,
            volume_id=row.id,
            slice_index=k,
            object_key="",
        )
        sample.object_key = keys.sample(dataset.project_id, dataset.id, sample.id)
        samples.append(sample)
    session.add_all(samples)
    try:
        session.flush()
    except IntegrityError as exc:  # an image named like one of its slices (stored by a concurrent upload)
        raise Conflict(
            f"{blob.name}: the dataset has an image named like one of its slices ({samples[0].file_name}, "
            "...); rename the volume."
        ) from exc
    unit.delete_on_rollback(session, store, [row.object_key] + [s.object_key for s in samples])
    store.put(row.object_key, blob.data, content_type=GZIP)
    for sample, image in zip(samples, slices, strict=True):
        store.put(sample.object_key, encode_png(image), content_type="image/png")
    return row


def label_masks(
    session: Session, dataset: Dataset, blobs: list[Blob], label_map: LabelMap, limits: UploadLimits
) -> list[Blob]:
    """Label volumes as one mask file per slice (class indices as PNG, named ``<volume>_s012.png`` so that
    each matches its slice's sample); ``InvalidInput`` naming each volume that has no image volume of
    its name and shape in the dataset or holds values outside the label map. Nothing is stored here."""
    stored = {
        name_key(v.name): v for v in session.scalars(select(Volume).where(Volume.dataset_id == dataset.id))
    }
    problems: list[dict[str, str]] = []
    masks: list[Blob] = []
    for blob in blobs:
        image = stored.get(name_key(name(blob)))
        if image is None:
            problems.append({"file": blob.name, "reason": "no image volume of this name in the dataset"})
            continue
        try:
            with reading(blob, limits) as volume:
                if list(volume.data.shape) != image.shape:
                    raise ValueError(
                        f"label volume of shape {list(volume.data.shape)} for image volume "
                        f"{image.file_name} of shape {image.shape}"
                    )
                slices = nifti.label_slices(volume, label_map.num_classes)
                masks += [
                    Blob(f"{nifti.slice_id(image.name, k)}.png", mask_to_png(m, label_map, visible=False))
                    for k, m in enumerate(slices)
                ]
        except ValueError as exc:
            problems.append({"file": blob.name, "reason": reason(exc, name(blob))})
    if problems:
        raise InvalidInput(
            f"{len(problems)} label volume(s) cannot be stored; nothing was stored.", invalid_files=problems
        )
    return masks


def get_volume(session: Session, dataset_id: uuid.UUID, volume_id: uuid.UUID) -> Volume:
    volume = session.get(Volume, volume_id)
    if volume is None or volume.dataset_id != dataset_id:
        raise NotFound(f"volume {volume_id} not found in dataset {dataset_id}.")
    return volume


def list_volumes(session: Session, dataset: Dataset) -> list[Volume]:
    return list(session.scalars(select(Volume).where(Volume.dataset_id == dataset.id).order_by(Volume.name)))


def _job_slices(
    session: Session, job: TrainingJob, volume_id: uuid.UUID | None = None
) -> list[tuple[Sample, NoiseFlag, Volume]]:
    """The job's noise flags of volume slices (of one volume), with their samples and volumes, in slice
    order."""
    query = (
        select(Sample, NoiseFlag, Volume)
        .join(NoiseFlag, NoiseFlag.sample_id == Sample.id)
        .join(Volume, Volume.id == Sample.volume_id)
        .where(NoiseFlag.job_id == job.id)
    )
    if volume_id is not None:
        query = query.where(Volume.id == volume_id)
    return [(s, f, v) for s, f, v in session.execute(query.order_by(Volume.name, Sample.slice_index))]


def volume_verdicts(session: Session, job: TrainingJob) -> list[dict[str, Any]]:
    """One verdict per volume the job trained on, from its slices' (``gtcorrect.volumes.volume_report``):
    flagged when any slice is, its noise probability the highest of its slices', the flagged slices
    (most doubtful first); with the volume's id and file, which slices have a proposed correction, and
    its slices' sample ids in slice order (their overlays and masks)."""
    require_succeeded(job)
    rows = _job_slices(session, job)
    if not rows:
        return []
    corrected = set(
        session.scalars(select(CorrectedMask.sample_id).where(CorrectedMask.job_id == job.id)).all()
    )
    report = nifti.volume_report(
        [nifti.slice_id(v.name, _index(s)) for s, _, v in rows],
        np.array([1.0 - f.clean_probability for _, f, _ in rows]),
        np.array([f.flagged for _, f, _ in rows]),
    )
    by_name: dict[str, tuple[Volume, list[Sample]]] = {}
    for sample, _, volume in rows:  # in slice order
        by_name.setdefault(volume.name, (volume, []))[1].append(sample)
    for entry in report:
        volume, slices = by_name[entry["volume"]]
        entry["volume_id"] = str(volume.id)
        entry["file_name"] = volume.file_name
        entry["corrected_slices"] = [_index(s) for s in slices if s.id in corrected]
        entry["slice_sample_ids"] = [str(s.id) for s in slices]
    return report


def _index(sample: Sample) -> int:
    return int(sample.slice_index) if sample.slice_index is not None else 0


def corrected_volume(session: Session, store: ObjectStore, job: TrainingJob, volume: Volume) -> bytes:
    """The job's masks of ``volume`` as a NIfTI label volume in the image volume's space (its affine and
    header; voxels uint8 class indices): each slice's proposed correction where the job proposes one, the
    mask it trained on otherwise. 409 when a slice has no mask in the job."""
    require_succeeded(job)
    label_map = label_map_of(session.get_one(Dataset, volume.dataset_id))
    rows = _job_slices(session, job, volume.id)
    depth = volume.shape[nifti.SLICE_AXIS]
    have = {_index(s) for s, _, _ in rows}
    missing = sorted(set(range(depth)) - have)
    if missing:
        raise Conflict(f"volume {volume.name}: slices {missing[:10]} have no mask in job {job.id}.")
    fixes = dict(
        session.execute(
            select(CorrectedMask.sample_id, CorrectedMask.object_key).where(
                CorrectedMask.job_id == job.id, CorrectedMask.sample_id.in_([s.id for s, _, _ in rows])
            )
        ).all()
    )
    given = dict(
        session.execute(
            select(Annotation.id, Annotation.object_key).where(
                Annotation.id.in_([f.annotation_id for _, f, _ in rows])
            )
        ).all()
    )
    masks = []
    for sample, flag, _ in rows:
        key = fixes.get(sample.id) or given[flag.annotation_id]
        masks.append(
            read_mask(read_object(store, key), num_classes=label_map.num_classes, name=sample.file_name)
        )
    image = _stored_volume(store, volume)
    return nifti.label_volume_bytes(nifti.stack(masks), image)


def _stored_volume(store: ObjectStore, volume: Volume) -> nifti.Volume:
    """The image volume as uploaded (checked then: no cap on reading it back)."""
    return nifti.read_volume_stream(
        io.BytesIO(read_object(store, volume.object_key)), volume.file_name, 2**62
    )
