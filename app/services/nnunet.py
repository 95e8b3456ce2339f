"""nnU-Net v2 raw datasets in: one zip of a dataset folder becomes a dataset with dataset.json's label map,
one sample per training case (``{case}.png``) and one accepted annotation batch of the labelsTr masks.

The format is the engine's (``gtcorrect.nnunet_import``); this module reads the archive within the upload
limits, makes each case's image (its channel files combined), and stores through the services an image
upload and a mask batch use, in the request's one unit of work: a problem anywhere stores nothing, and
every problem names the archive entry at fault.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import PurePosixPath
from typing import IO, Any

import tifffile
from sqlalchemy.orm import Session

from app.db.models import AnnotationBatch, Dataset, Project
from app.errors import InvalidInput
from app.services import annotations as batches
from app.services import datasets, images
from app.services.uploads import (
    MIB,
    Blob,
    Outcome,
    UploadLimits,
    declared_bytes,
    encode_png,
    expand,
    header_problem,
    is_zip,
    reason,
)
from app.storage.base import ObjectStore
from gtcorrect.data import read_image
from gtcorrect.imports import ImportProblems
from gtcorrect.nnunet_import import (
    NIFTI_ENDINGS,
    NO_3D,
    NnUNetCase,
    NnUNetDataset,
    combine_channels,
    read_dataset,
)

SOURCE = "nnU-Net v2 raw import"
DEFAULT_ANNOTATOR = "nnU-Net labels"
# Channel names and a label map; nnU-Net's explicit file list (refused) is what makes one large.
MAX_DATASET_JSON_BYTES = 4 * MIB


@dataclass(frozen=True)
class NnUNetImport:
    dataset: Dataset
    batch: AnnotationBatch
    layout: NnUNetDataset
    samples: int  # a 2D case is one, a volume case one per slice


def import_dataset(
    session: Session,
    store: ObjectStore,
    project: Project,
    upload: Blob,
    limits: UploadLimits,
    *,
    name: str | None,
    annotator: str,
) -> NnUNetImport:
    """Create the dataset, its samples and its batch from the zip ``upload`` (flushed, objects written
    and removed again if the request rolls back); ``name`` None: dataset.json's name, else the folder's."""
    if not is_zip(upload):
        why = "send the nnU-Net dataset folder (dataset.json, imagesTr, labelsTr) as one zip archive"
        raise _invalid(upload, [{"file": upload.name, "reason": why}])
    entries = {blob.name: blob for blob in expand([upload], limits, keep_paths=True)}
    try:
        layout = read_dataset(list(entries), partial(_read_json, entries))
        if layout.file_ending == ".tif":
            _refuse_stacks(layout, entries, limits)
    except ImportProblems as exc:
        raise _invalid(upload, exc.problems) from None
    title = name or layout.name or PurePosixPath(upload.name).stem
    dataset = _create(session, project, upload, layout, title)
    image_origin: dict[str, str] = {}  # sample file name -> its first channel entry
    label_origin = {f"{c.case}{layout.file_ending}": c.label for c in layout.cases}
    with _spool() as spool:
        case_images = _case_images(upload, layout, entries, limits, spool, image_origin)
        with _named_by_entry(image_origin):
            outcomes = images.upload_images(session, store, dataset, case_images, limits)
        _refuse_duplicates(upload, outcomes, image_origin)
        masks = [_renamed(entries[c.label], f"{c.case}{layout.file_ending}") for c in layout.cases]
        with _named_by_entry(label_origin):
            batch = batches.create_batch(
                session, store, dataset, annotator=annotator, source=SOURCE, files=masks, limits=limits
            )
    batch.report = _report(batch, layout, label_origin)
    session.flush()
    return NnUNetImport(dataset, batch, layout, sum(o.slices or 1 for o in outcomes))


def _report(batch: AnnotationBatch, layout: NnUNetDataset, label_origin: dict[str, str]) -> dict[str, Any]:
    """The batch's report with its files named by their labelsTr entries and what the archive held."""
    return {
        **batch.report,
        "format": "nnunet",
        "files": [{**f, "file": label_origin.get(f["file"], f["file"])} for f in batch.report["files"]],
        "nnunet": {
            "root": layout.root,
            "file_ending": layout.file_ending,
            "channel_names": list(layout.channel_names),
            "test_images_left_out": layout.test_images,
            "ignored": list(layout.ignored),
        },
    }


def _invalid(upload: Blob, problems: list[dict[str, str]]) -> InvalidInput:
    first = problems[0]
    return InvalidInput(
        f"{len(problems)} problem(s) in the nnU-Net dataset {upload.name}; nothing was stored. "
        f"{first['file']}: {first['reason']}",
        invalid_files=problems,
    )


def _read_json(entries: dict[str, Blob], name: str) -> bytes:
    blob = entries[name]
    if blob.size > MAX_DATASET_JSON_BYTES:
        why = f"{blob.size} bytes, above the {MAX_DATASET_JSON_BYTES} a dataset.json may hold"
        raise ImportProblems([{"file": name, "reason": why}])
    return blob.data


def _refuse_stacks(layout: NnUNetDataset, entries: dict[str, Blob], limits: UploadLimits) -> None:
    """A ``.tif`` dataset may be 2D or 3D (nnU-Net tries its 2D reader first): refuse multi-page TIFFs,
    whose first page alone would otherwise become the sample."""
    problems = []
    for name in [n for case in layout.cases for n in (*case.images, case.label)]:
        with limits.holding(entries[name].size):
            try:
                with tifffile.TiffFile(entries[name].open()) as tif:
                    pages = len(tif.pages)
            except Exception:  # not a TIFF: the image decoder names the reason later
                continue
        if pages > 1:
            problems.append({"file": name, "reason": f"a TIFF of {pages} pages, a 3D stack; {NO_3D}"})
    if problems:
        raise ImportProblems(problems)


def _create(session: Session, project: Project, upload: Blob, layout: NnUNetDataset, title: str) -> Dataset:
    try:
        return datasets.create_dataset(session, project, title, layout.label_map.to_dict(), {})
    except InvalidInput as exc:
        if exc.extra.get("field") != "label_map":
            raise
        meta = f"{layout.root}/dataset.json" if layout.root else "dataset.json"
        raise _invalid(upload, [{"file": meta, "reason": exc.detail}]) from None


class _Spool:
    """Combined case images, written once to one temporary file and read back on demand (a request holds
    one image at a time, as an image upload does)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def add(self, name: str, data: bytes) -> Blob:
        offset = self._file.seek(0, io.SEEK_END)
        self._file.write(data)
        return Blob(name, opener=partial(self._read, offset, len(data)), size=len(data))

    def _read(self, offset: int, size: int) -> IO[bytes]:
        self._file.seek(offset)
        return io.BytesIO(self._file.read(size))


@contextmanager
def _spool() -> Iterator[_Spool]:
    with tempfile.TemporaryFile() as file:
        yield _Spool(file)


def _renamed(blob: Blob, name: str) -> Blob:
    return Blob(name, opener=blob.open, size=blob.size)


def _case_images(
    upload: Blob,
    layout: NnUNetDataset,
    entries: dict[str, Blob],
    limits: UploadLimits,
    spool: _Spool,
    origin: dict[str, str],
) -> list[Blob]:
    """``{case}.png`` per case: its one image file as it is (the upload decodes and stores it), or its
    three channel files combined into one RGB PNG; a NIfTI case's volume as ``{case}.nii.gz`` (its slices
    become the samples). Fills ``origin`` (upload name -> entry)."""
    out: list[Blob] = []
    problems: list[dict[str, str]] = []
    volume = layout.file_ending in NIFTI_ENDINGS
    for case in layout.cases:
        sample = f"{case.case}{layout.file_ending}" if volume else f"{case.case}.png"
        origin[sample] = case.images[0]
        if len(case.images) == 1:
            out.append(_renamed(entries[case.images[0]], sample))
            continue
        try:
            out.append(spool.add(sample, _combined(case, entries, limits)))
        except ImportProblems as exc:
            problems += exc.problems
    if problems:
        raise _invalid(upload, problems)
    return out


def _combined(case: NnUNetCase, entries: dict[str, Blob], limits: UploadLimits) -> bytes:
    blobs = [entries[name] for name in case.images]
    problems = [
        {"file": b.name, "reason": p} for b in blobs if (p := header_problem(b, limits.max_image_pixels))
    ]
    if problems:
        raise ImportProblems(problems)
    with limits.holding(sum(declared_bytes(b) for b in blobs)):
        planes = []
        for b in blobs:
            try:
                planes.append(read_image(b.data, name=b.name, max_pixels=limits.max_image_pixels))
            except ValueError as exc:
                problems.append({"file": b.name, "reason": reason(exc, b.name)})
        if problems:
            raise ImportProblems(problems)
        return encode_png(combine_channels(planes, case.images))


@contextmanager
def _named_by_entry(origin: dict[str, str]) -> Iterator[None]:
    """Problems the reused services name by sample or mask file name, named by their archive entry."""
    try:
        yield
    except InvalidInput as exc:
        files = exc.extra.get("invalid_files")
        if files:
            exc.extra["invalid_files"] = [{**f, "file": origin.get(f["file"], f["file"])} for f in files]
        raise


def _refuse_duplicates(upload: Blob, outcomes: list[Outcome], origin: dict[str, str]) -> None:
    """Two cases with one image: a dataset holds an image once, so the second case would lose its sample."""
    created = {o.id: o.file for o in outcomes if o.status == "created"}
    problems = [
        {
            "file": origin[o.file],
            "reason": f"the same image as {origin[created[o.id]]}; a dataset holds it once",
        }
        for o in outcomes
        if o.status == "duplicate"
    ]
    if problems:
        raise _invalid(upload, problems)
