"""Exports of an annotation batch (uploaded or curated) for other tools: a PNG mask zip that can be
uploaded again, nnU-Net v2's raw dataset layout, and COCO JSON with RLE masks.

The formats themselves are pure functions of the engine (``gtcorrect.export``); this module picks the
batch's masks and images from the store and names the archive entries.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Annotation, AnnotationBatch, Dataset, Sample
from app.errors import InvalidInput, NotFound
from app.services.datasets import label_map_of
from app.services.objects import read_object
from app.services.reports import ZipSource
from app.storage.base import ObjectStore
from gtcorrect.data import mask_to_png, read_mask
from gtcorrect.export import ExportImage, case_ids, coco_document, nnunet_dataset_json, unique_names
from gtcorrect.types import LabelMap

ExportFormat = Literal["png", "nnunet", "coco"]
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


@dataclass(frozen=True)
class _Item:
    sample: Sample
    annotation: Annotation


def _items(session: Session, batch: AnnotationBatch) -> list[_Item]:
    rows = session.execute(
        select(Sample, Annotation)
        .join(Annotation, Annotation.sample_id == Sample.id)
        .where(Annotation.batch_id == batch.id)
        .order_by(Sample.file_name)
    ).all()
    return [_Item(s, a) for s, a in rows]


def batch_mask(session: Session, store: ObjectStore, batch: AnnotationBatch, sample_id: Any) -> bytes:
    """One mask of the batch (PNG, class indices at the image's size)."""
    key = session.scalar(
        select(Annotation.object_key).where(
            Annotation.batch_id == batch.id, Annotation.sample_id == sample_id
        )
    )
    if key is None:
        raise NotFound(f"annotation batch {batch.id} has no mask for sample {sample_id}.")
    return read_object(store, key)


def _label_file(store: ObjectStore, key: str, label_map: LabelMap) -> Callable[[], bytes]:
    """A stored mask as a label file: class indices, whatever encoding the object was written in (batches
    curated before 2026-12-06 hold 0/255 for two classes, which nnU-Net refuses)."""

    def encode() -> bytes:
        mask = read_mask(read_object(store, key), num_classes=label_map.num_classes, name=key)
        return mask_to_png(mask, label_map, visible=False)

    return encode


def png_entries(
    session: Session, store: ObjectStore, dataset: Dataset, batch: AnnotationBatch
) -> list[tuple[str, ZipSource]]:
    """``masks/{stem}.png`` for every mask (class indices) plus ``manifest.csv`` (mask, sample): the zip
    uploads again as a batch of the same dataset."""
    label_map = label_map_of(dataset)
    items = _items(session, batch)
    names = [f"{stem}.png" for stem in unique_names([PurePosixPath(i.sample.file_name).stem for i in items])]
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(["mask", "sample"])
    entries: list[tuple[str, ZipSource]] = []
    for name, item in zip(names, items, strict=True):
        entries.append((f"masks/{name}", _label_file(store, item.annotation.object_key, label_map)))
        writer.writerow([name, item.sample.file_name])
    entries.append(("masks/manifest.csv", manifest.getvalue().encode()))
    return entries


def nnunet_entries(
    session: Session, store: ObjectStore, dataset: Dataset, batch: AnnotationBatch, dataset_number: int
) -> tuple[str, list[tuple[str, ZipSource]]]:
    """nnU-Net v2 raw layout ``Dataset{NNN}_{name}/``: ``imagesTr/{case}_0000.png``,
    ``labelsTr/{case}.png``, ``dataset.json``, and ``cases.csv`` mapping cases to samples. Returns the
    folder name and the entries."""
    if not 1 <= dataset_number <= 999:
        raise InvalidInput(
            f"dataset_number must lie in 1..999, got {dataset_number}.", field="dataset_number"
        )
    items = _items(session, batch)
    channels = {i.sample.channels for i in items}
    if len(channels) > 1:
        raise InvalidInput(
            f"nnU-Net needs one channel count per dataset; the batch's images have {sorted(channels)}.",
            field="format",
        )
    name = _NAME_UNSAFE.sub("", dataset.name.title()) or "Dataset"
    root = f"Dataset{dataset_number:03d}_{name}"
    cases = case_ids([PurePosixPath(i.sample.file_name).stem for i in items])
    mapping = io.StringIO()
    writer = csv.writer(mapping)
    writer.writerow(["case", "sample_id", "file_name", "annotation_id"])
    label_map = label_map_of(dataset)
    entries: list[tuple[str, ZipSource]] = []
    for case, item in zip(cases, items, strict=True):
        entries.append((f"{root}/imagesTr/{case}_0000.png", item.sample.object_key))
        entries.append(
            (f"{root}/labelsTr/{case}.png", _label_file(store, item.annotation.object_key, label_map))
        )
        writer.writerow([case, item.sample.id, item.sample.file_name, item.annotation.id])
    description = f"gtcorrect annotation batch {batch.id} ({batch.kind.value}, annotator {batch.annotator!r})"
    meta = nnunet_dataset_json(label_map, channels.pop() if channels else 3, len(items), description)
    entries.append((f"{root}/dataset.json", json.dumps(meta, indent=2).encode()))
    entries.append((f"{root}/cases.csv", mapping.getvalue().encode()))
    return root, entries


def coco(session: Session, store: ObjectStore, dataset: Dataset, batch: AnnotationBatch) -> dict[str, Any]:
    """The batch as a COCO instances document: one RLE annotation per image and foreground class."""
    label_map = label_map_of(dataset)
    items = _items(session, batch)

    def images() -> Any:
        for k, item in enumerate(items, start=1):
            mask = read_mask(
                read_object(store, item.annotation.object_key),
                num_classes=label_map.num_classes,
                name=item.sample.file_name,
            )
            yield ExportImage(k, item.sample.file_name, mask)

    info = {
        "description": f"gtcorrect annotation batch {batch.id}",
        "dataset_id": str(dataset.id),
        "batch_id": str(batch.id),
        "kind": batch.kind.value,
        "annotator": batch.annotator,
    }
    return coco_document(images(), label_map, info)
