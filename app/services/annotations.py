"""Annotation batches: match masks to samples, validate them all, then store them all (or nothing)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any, Literal

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Annotation, AnnotationBatch, BatchKind, BatchStatus, Dataset, Sample
from app.errors import InvalidInput, NotFound, PayloadTooLarge
from app.services import unit, volumes
from app.services.datasets import label_map_of
from app.services.uploads import (
    Blob,
    UploadLimits,
    drawn_bytes,
    duplicate_names,
    expand,
    header_problem,
    name_key,
    reason,
    text_problem,
)
from app.storage import keys
from app.storage.base import ObjectStore, put_all
from gtcorrect.data import mask_to_png, read_mask
from gtcorrect.imports import ImportedImage, ImportProblems, is_coco, read_coco, read_cvat
from gtcorrect.label_studio import is_label_studio, read_label_studio

MANIFEST_NAMES = ("manifest.csv", "manifest.json")
# Annotation tools' exports (a batch of one file): parsed whole, which takes about ten times their size.
EXPORT_SUFFIXES = (".json", ".xml")
MAX_EXPORT_BYTES = 64 * 1024 * 1024
EXPORT_FORMATS = {"coco": "COCO", "cvat": "CVAT", "label-studio": "Label Studio", "json": "JSON"}
NOT_AN_EXPORT = (
    "neither a COCO document (an object with 'images' and 'annotations' lists) nor a Label Studio JSON "
    "export (a list of tasks, each with a 'data' object); CVAT exports are XML"
)
# Which sample a mask file (by its name) belongs to, or the reason there is none.
SampleFinder = Callable[[str], Sample | str]


@dataclass(frozen=True)
class _Match:
    blob: Blob
    sample: Sample
    png: bytes  # the mask's class indices as an 8-bit PNG, encoded as soon as it is validated


def _stem(name: str) -> str:
    return name_key(PurePosixPath(name).stem)


def parse_manifests(blobs: list[Blob]) -> dict[str, str]:
    """mask file name (``name_key``) -> sample file name over every manifest of an upload; a mask named
    twice with different samples is refused (which one was meant cannot be guessed)."""
    manifest: dict[str, str] = {}
    problems = []
    for blob in blobs:
        for mask, sample in parse_manifest(blob):
            key = name_key(mask)
            if manifest.get(key, sample) != sample:
                problems.append(
                    {
                        "file": blob.name,
                        "reason": f"mask {mask!r} is mapped to both {manifest[key]!r} and {sample!r}",
                    }
                )
            manifest.setdefault(key, sample)
    if problems:
        raise InvalidInput(
            f"{len(problems)} mask(s) mapped to two samples in the manifest; nothing was stored.",
            invalid_files=problems,
        )
    return manifest


def parse_manifest(blob: Blob) -> list[tuple[str, str]]:
    """(mask file name, sample file name) pairs from ``manifest.csv`` (columns mask,sample) or
    ``manifest.json`` ({"mask.png": "image.jpg"} or [{"mask": ..., "sample": ...}])."""
    try:
        text = blob.data.decode("utf-8-sig")
        if blob.name.lower().endswith(".json"):
            data = json.loads(text)
            pairs = list(data.items()) if isinstance(data, dict) else [(d["mask"], d["sample"]) for d in data]
        else:
            pairs = [(row["mask"], row["sample"]) for row in csv.DictReader(io.StringIO(text))]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(
            f"{blob.name}: unreadable manifest; expected mask,sample pairs.",
            invalid_files=[
                {"file": blob.name, "reason": f"unreadable manifest ({type(exc).__name__}: {exc})"}
            ],
        ) from exc
    return [(str(m).strip(), str(s).strip()) for m, s in pairs]


def _sample_finder(samples: list[Sample], manifest: dict[str, str]) -> SampleFinder:
    by_name = {name_key(s.file_name): s for s in samples}
    by_stem: dict[str, list[Sample]] = {}
    for s in samples:
        by_stem.setdefault(_stem(s.file_name), []).append(s)
    return lambda name: _find_sample(name, manifest, by_name, by_stem)


def _find_sample(
    name: str, manifest: dict[str, str], by_name: dict[str, Sample], by_stem: dict[str, list[Sample]]
) -> Sample | str:
    """The sample a mask belongs to, or the reason there is none."""
    if name_key(name) in manifest:
        target = manifest[name_key(name)]
        return (
            by_name.get(name_key(target))
            or f"the manifest names sample {target!r}, which is not in the dataset"
        )
    candidates = by_stem.get(_stem(name), [])
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(sorted(s.file_name for s in candidates))
        return f"the file stem matches several samples ({names}); add a manifest"
    return f"no sample in the dataset matches the stem {_stem(name)!r}"


def _validate(
    blobs: list[Blob], find: SampleFinder, dataset: Dataset, limits: UploadLimits, encoding: MaskEncoding
) -> list[_Match]:
    label_map = label_map_of(dataset)
    num_classes = label_map.num_classes
    problems = duplicate_names(blobs)
    matches: list[_Match] = []
    for blob in blobs:
        found = find(blob.name)
        if isinstance(found, str):
            problems.append({"file": blob.name, "reason": found})
            continue
        refused = header_problem(blob, limits.max_image_pixels)
        if refused is not None:  # read_mask has no pixel limit of its own; refuse before decoding
            problems.append({"file": blob.name, "reason": refused})
            continue
        try:
            with limits.decoding(blob):
                mask = read_mask(
                    blob.data,
                    num_classes=num_classes,
                    mode=encoding.mode,
                    threshold=encoding.threshold,
                    name=blob.name,
                    dtype=np.uint8,
                )
                shape = mask.shape
                # Masks compress to a few kB: keep the PNG, not the pixels (one decoded mask at a time).
                png = (
                    mask_to_png(mask, label_map, visible=False)
                    if shape == (found.height, found.width)
                    else b""
                )
                del mask
        except ValueError as exc:
            problems.append({"file": blob.name, "reason": reason(exc, blob.name)})
            continue
        if shape != (found.height, found.width):
            problems.append(
                {
                    "file": blob.name,
                    "reason": f"mask size {shape[1]}x{shape[0]} differs from image "
                    f"{found.file_name} size {found.width}x{found.height}",
                }
            )
            continue
        matches.append(_Match(blob, found, png))
    per_sample: dict[uuid.UUID, list[str]] = {}
    for m in matches:
        per_sample.setdefault(m.sample.id, []).append(m.blob.name)
    for m in matches:
        others = per_sample[m.sample.id]
        if len(others) > 1:
            problems.append(
                {"file": m.blob.name, "reason": f"{len(others)} masks match sample {m.sample.file_name}"}
            )
    if problems:
        hint = _lossy_hint(problems, encoding, num_classes)
        raise InvalidInput(
            f"{len(problems)} problem(s) in the batch of {len(blobs)} masks; nothing was stored."
            + (f" Hint: {hint}" if hint else ""),
            invalid_files=problems,
            **({"hint": hint} if hint else {}),
        )
    return matches


LOSSY = (".jpg", ".jpeg", ".jfif", ".webp")


def _lossy_hint(problems: list[dict[str, str]], encoding: MaskEncoding, num_classes: int) -> str | None:
    """Lossy masks of a two-class dataset carry compression noise around 0 and 255: the fix is not in
    the files but in ``mask_mode``."""
    lossy = [
        p for p in problems if p["file"].lower().endswith(LOSSY) and "outside the label map" in p["reason"]
    ]
    if encoding.mode != "index" or num_classes != 2 or not lossy:
        return None
    return (
        f"{len(lossy)} mask(s) are lossy images (JPEG) whose compression noise puts values between 0 and "
        "255; upload them with mask_mode=binary (grey above the threshold, 127 by default, is the "
        "foreground)."
    )


def _check_text(field: str, value: str, *, allow_newlines: bool) -> None:
    """Free-text form fields: not empty (annotator) and no control characters (Postgres refuses NUL)."""
    if field == "annotator" and not value.strip():
        raise InvalidInput("annotator must not be empty.", field=field)
    problem = text_problem(value, allow_newlines=allow_newlines)
    if problem is not None:
        raise InvalidInput(f"{field} {problem}.", field=field)


@dataclass(frozen=True)
class MaskEncoding:
    """How mask files encode classes. "index": pixel value = class index (0/255 accepted for two
    classes). "binary": grey value > threshold is the foreground, for two-class datasets whose masks
    were saved lossily (JPEG masks such as Kvasir-SEG's carry compression noise around 0 and 255)."""

    mode: Literal["index", "binary"] = "index"
    threshold: int = 127


def create_batch(
    session: Session,
    store: ObjectStore,
    dataset: Dataset,
    *,
    annotator: str,
    source: str,
    files: list[Blob],
    limits: UploadLimits,
    encoding: MaskEncoding = MaskEncoding(),
) -> AnnotationBatch:
    """Validate every mask of the upload and store the batch, its annotations and mask PNGs."""
    _check_text("annotator", annotator, allow_newlines=False)
    if encoding.mode == "binary" and label_map_of(dataset).num_classes != 2:
        raise InvalidInput(
            f"mask_mode=binary needs a two-class label map; dataset {dataset.name!r} has "
            f"{label_map_of(dataset).num_classes} classes.",
            field="mask_mode",
        )
    _check_text("source", source, allow_newlines=True)
    blobs = expand(files, limits)
    manifests = [b for b in blobs if b.name.lower() in MANIFEST_NAMES]
    masks = [b for b in blobs if b.name.lower() not in MANIFEST_NAMES]
    if not masks:
        raise InvalidInput("the batch holds no mask files.")
    fmt = "masks"
    notes: dict[str, Any] = {}
    documents = [b for b in masks if b.name.lower().endswith(EXPORT_SUFFIXES)]
    if documents and len(masks) > 1:
        reason = "an annotation tool's export is uploaded alone (its masks are in it), not beside masks"
        raise InvalidInput(
            "the batch mixes an export (COCO JSON, Label Studio JSON or CVAT XML) with other files; "
            "nothing was stored.",
            invalid_files=[{"file": documents[0].name, "reason": reason}],
        )
    samples = list(session.scalars(select(Sample).where(Sample.dataset_id == dataset.id)).all())
    find = _sample_finder(samples, parse_manifests(manifests))
    if documents:
        masks, fmt, notes = _from_export(documents[0], dataset, limits, find)
    stacks, masks = volumes.split(masks)
    if stacks:  # label volumes: a mask per slice, named after the slice's sample
        fmt = "nifti" if not masks else fmt
        notes["volumes"] = [b.name for b in stacks]
        masks += volumes.label_masks(session, dataset, stacks, label_map_of(dataset), limits)
    matches = _validate(masks, find, dataset, limits, encoding)
    batch = AnnotationBatch(
        id=uuid.uuid4(),
        dataset_id=dataset.id,
        annotator=annotator.strip(),
        source=source,
        status=BatchStatus.accepted,
    )
    session.add(batch)
    session.flush()  # annotations reference the batch; without ORM relationships the insert order is ours
    report = _add_annotations(session, store, dataset, batch, matches)
    batch.report = {
        "accepted": len(report),
        "samples_without_mask": len(samples) - len(report),
        "mask_mode": encoding.mode,
        "format": fmt,
        **notes,
        "files": report,
    }
    session.flush()
    return batch


def _from_export(
    blob: Blob, dataset: Dataset, limits: UploadLimits, find: SampleFinder
) -> tuple[list[Blob], str, dict[str, Any]]:
    """An annotation tool's export (COCO JSON, Label Studio JSON, CVAT for images XML) -> one mask PNG per
    listed image, named by its file name so that it matches its sample as an uploaded mask file would; the
    format's name; and what the export says beyond the masks, for the batch's report
    (``export_annotators``: who drew them, ``export_skipped``: answers that mark no region, by type)."""
    if blob.size > MAX_EXPORT_BYTES:
        raise PayloadTooLarge(f"the export {blob.name} holds {blob.size} bytes, above {MAX_EXPORT_BYTES}.")
    label_map = label_map_of(dataset)
    fmt = "json" if blob.name.lower().endswith(".json") else "cvat"  # JSON: which one, once it is read
    try:
        if fmt == "json":
            fmt, images = _read_json_export(blob, dataset, limits.max_image_pixels)
        else:
            images = read_cvat(blob.data, label_map, limits.max_image_pixels)
        masks = []
        for image in images:
            image = _sized(image, find)
            if not image.height:  # no sample, so no size: the match reports it before reading the mask
                masks.append(Blob(image.file_name, b""))
                continue
            with limits.holding(drawn_bytes(image.width, image.height)):
                masks.append(Blob(image.file_name, mask_to_png(image.draw(), label_map, visible=False)))
    except ImportProblems as exc:
        raise InvalidInput(
            f"{len(exc.problems)} problem(s) in the {EXPORT_FORMATS[fmt]} export {blob.name}; "
            "nothing was stored.",
            invalid_files=exc.problems,
        ) from None
    return masks, fmt, _export_notes(images)


def _read_json_export(blob: Blob, dataset: Dataset, max_pixels: int) -> tuple[str, list[ImportedImage]]:
    try:
        doc = json.loads(blob.data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportProblems([{"file": blob.name, "reason": f"not valid JSON ({exc})"}]) from None
    if is_coco(doc):
        return "coco", read_coco(doc, label_map_of(dataset), max_pixels)
    if is_label_studio(doc):
        return "label-studio", read_label_studio(doc, label_map_of(dataset), max_pixels)
    raise ImportProblems([{"file": "document", "reason": NOT_AN_EXPORT}])


def _sized(image: ImportedImage, find: SampleFinder) -> ImportedImage:
    """An image whose size the export does not give (a Label Studio annotation that draws nothing) at
    the size of its sample."""
    if image.height:
        return image
    found = find(image.file_name)
    return image if isinstance(found, str) else replace(image, height=found.height, width=found.width)


def _export_notes(images: list[ImportedImage]) -> dict[str, Any]:
    annotators = sorted({i.annotator for i in images if i.annotator is not None})
    skipped = Counter(kind for i in images for kind in i.skipped)
    return {
        **({"export_annotators": annotators} if annotators else {}),
        **({"export_skipped": dict(sorted(skipped.items()))} if skipped else {}),
    }


def _add_annotations(
    session: Session, store: ObjectStore, dataset: Dataset, batch: AnnotationBatch, matches: list[_Match]
) -> list[dict[str, str]]:
    """Annotation rows (flushed) and their mask PNGs (removed again if the request fails)."""
    report: list[dict[str, str]] = []
    pending: list[tuple[str, bytes]] = []
    for match in matches:
        ann_id = uuid.uuid4()
        key = keys.annotation(dataset.project_id, dataset.id, ann_id)
        digest = match.blob.sha256()
        session.add(
            Annotation(id=ann_id, sample_id=match.sample.id, batch_id=batch.id, object_key=key, sha256=digest)
        )
        pending.append((key, match.png))
        report.append(
            {
                "file": match.blob.name,
                "sample": match.sample.file_name,
                "sample_id": str(match.sample.id),
                "annotation_id": str(ann_id),
            }
        )
    session.flush()
    unit.delete_on_rollback(session, store, [k for k, _ in pending])
    put_all(store, pending, "image/png")
    return report


def get_batch(session: Session, dataset: Dataset, batch_id: uuid.UUID) -> AnnotationBatch:
    batch = session.get(AnnotationBatch, batch_id)
    if batch is None or batch.dataset_id != dataset.id:
        raise NotFound(f"annotation batch {batch_id} not found in dataset {dataset.id}.")
    return batch


def list_batches(
    session: Session,
    dataset: Dataset,
    *,
    annotator: str | None,
    status: BatchStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[AnnotationBatch], int]:
    query = select(AnnotationBatch).where(AnnotationBatch.dataset_id == dataset.id)
    if annotator:
        query = query.where(AnnotationBatch.annotator == annotator)
    if status:
        query = query.where(AnnotationBatch.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(AnnotationBatch.created_at, AnnotationBatch.id).limit(limit).offset(offset)
    )
    return list(rows.all()), total


def add_mask(
    session: Session,
    store: ObjectStore,
    dataset: Dataset,
    batch: AnnotationBatch,
    sample: Sample,
    mask: np.ndarray,
) -> uuid.UUID:
    """Store one derived mask (a curated or consensus version; (H, W) class indices) as the batch's own
    object and row, encoded as every stored annotation is: the class indices themselves. The object is
    removed again if the transaction rolls back. Returns the annotation id."""
    png = mask_to_png(mask, label_map_of(dataset), visible=False)
    ann_id = uuid.uuid4()
    key = keys.annotation(dataset.project_id, dataset.id, ann_id)
    unit.delete_on_rollback(session, store, [key])
    store.put(key, png, content_type="image/png")
    digest = hashlib.sha256(png).hexdigest()
    session.add(Annotation(id=ann_id, sample_id=sample.id, batch_id=batch.id, object_key=key, sha256=digest))
    return ann_id


def derived_batch(
    session: Session, dataset: Dataset, kind: BatchKind, annotator: str, note: str, provenance: dict[str, Any]
) -> AnnotationBatch:
    """A new accepted batch made by the service from other masks (curated or consensus), flushed; its
    masks follow with ``add_mask``."""
    batch = AnnotationBatch(
        id=uuid.uuid4(),
        dataset_id=dataset.id,
        annotator=annotator,
        source=note,
        status=BatchStatus.accepted,
        kind=kind,
        provenance=provenance,
    )
    session.add(batch)
    session.flush()
    return batch


def check_batches(session: Session, dataset: Dataset, batch_ids: list[uuid.UUID]) -> None:
    if not batch_ids:
        raise InvalidInput(
            "batch_ids must name at least one batch, or be null for the latest masks.", field="batch_ids"
        )
    found = set(
        session.scalars(
            select(AnnotationBatch.id).where(
                AnnotationBatch.dataset_id == dataset.id,
                AnnotationBatch.status == BatchStatus.accepted,
                AnnotationBatch.id.in_(batch_ids),
            )
        ).all()
    )
    missing = [str(b) for b in batch_ids if b not in found]
    if missing:
        raise InvalidInput(
            f"batch_ids: no accepted batch {', '.join(missing)} in dataset {dataset.id}.", field="batch_ids"
        )
