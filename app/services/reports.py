"""Reading a succeeded job's results: noise report, corrected masks, GMM rounds and their plots.

Recording them is the worker's side (``app.services.results``); this module only reads.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime
from pathlib import PurePosixPath

import numpy as np
from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session, aliased

from app.db.models import (
    Annotation,
    AnnotationBatch,
    AnnotatorStat,
    BatchKind,
    CorrectedMask,
    Dataset,
    GmmRound,
    JobStatus,
    Model,
    NoiseFlag,
    ReviewChoice,
    ReviewDecision,
    Sample,
    TrainingJob,
    as_utc,
)
from app.errors import Conflict, InvalidInput, NotFound
from app.services.datasets import label_map_of
from app.services.objects import read_object
from app.services.uploads import encode_png
from app.storage import keys
from app.storage.base import ObjectNotFound, ObjectStore
from gtcorrect.data import read_image, read_mask
from gtcorrect.export import cvat_document, overlay
from gtcorrect.label_studio import ReviewItem, review_tasks
from gtcorrect.plots import annotator_offsets_png
from gtcorrect.types import LabelMap

SORTS = {
    "clean_probability": NoiseFlag.clean_probability,
    "loss": NoiseFlag.loss,
    "file_name": Sample.file_name,
    "round_decided": NoiseFlag.round_decided,
}
_PLOT = re.compile(r"gmm_round_(\d+)\.png$")
# What one zip entry holds: an object key, the content, or a function that makes the content when the
# entry is written (a label file re-encoded from its object).
ZipSource = str | bytes | Callable[[], bytes]


@dataclass(frozen=True)
class ReportRow:
    sample_id: uuid.UUID
    file_name: str
    annotation_id: uuid.UUID
    clean_probability: float
    flagged: bool
    loss: float
    round_decided: int
    held_out: bool
    decided_by: str | None
    correction_proposed: bool
    changed_fraction: float | None
    changed_pixels: int | None
    annotator: str
    batch_id: uuid.UUID
    decision: str | None  # the current review decision (app.services.reviews), if any
    # The structure that looks most wrong: the foreground class whose given mask agrees least with the
    # network's prediction (None for two-class label maps and jobs before per-class figures).
    worst_class: str | None = None
    worst_class_dice: float | None = None
    classes: tuple[ClassFit, ...] = ()  # every foreground class either map has, in label order
    withheld_because: str | None = None  # why a flagged mask's correction was not proposed


@dataclass(frozen=True)
class ClassFit:
    index: int
    name: str
    dice_to_prediction: float


def class_fits(class_dice: list[float | None] | None, label_map: LabelMap) -> tuple[ClassFit, ...]:
    """A noise flag's per-class Dice (``NoiseFlag.class_dice``) named by the label map; classes neither
    the given mask nor the prediction has are left out."""
    names = label_map.names[1:]
    return tuple(
        ClassFit(k + 1, name, float(d))
        for k, (name, d) in enumerate(zip(names, class_dice or [], strict=False))  # None: no figures
        if d is not None
    )


def _worst(fits: tuple[ClassFit, ...]) -> ClassFit | None:
    return min(fits, key=lambda c: c.dice_to_prediction) if fits else None


@dataclass(frozen=True)
class ReportFilter:
    """Which rows: flagged or not, one annotator, one batch, decided or not (None: all)."""

    flagged: bool | None = None
    annotator: str | None = None
    batch_id: uuid.UUID | None = None
    decided: bool | None = None


def require_succeeded(job: TrainingJob) -> None:
    if job.status != JobStatus.succeeded:
        raise Conflict(
            f"job {job.id} is {job.status.value}; results exist only for succeeded jobs.",
            job_status=job.status.value,
        )


def _report_query(
    job: TrainingJob, only: ReportFilter
) -> Select[NoiseFlag, str, float, int | None, str, uuid.UUID, ReviewChoice]:
    decision = aliased(ReviewDecision)
    query = (
        select(
            NoiseFlag,
            Sample.file_name,
            CorrectedMask.changed_fraction,
            CorrectedMask.changed_pixels,
            AnnotationBatch.annotator,
            AnnotationBatch.id,
            decision.decision,
        )
        .join(Sample, Sample.id == NoiseFlag.sample_id)
        .join(Annotation, Annotation.id == NoiseFlag.annotation_id)
        .join(AnnotationBatch, AnnotationBatch.id == Annotation.batch_id)
        .outerjoin(
            CorrectedMask,
            and_(CorrectedMask.job_id == job.id, CorrectedMask.sample_id == NoiseFlag.sample_id),
        )
        .outerjoin(
            decision,
            and_(
                decision.job_id == job.id,
                decision.sample_id == NoiseFlag.sample_id,
                decision.superseded_at.is_(None),
            ),
        )
        .where(NoiseFlag.job_id == job.id)
    )
    if only.flagged is not None:
        query = query.where(NoiseFlag.flagged == only.flagged)
    if only.annotator is not None:
        query = query.where(AnnotationBatch.annotator == only.annotator)
    if only.batch_id is not None:
        query = query.where(AnnotationBatch.id == only.batch_id)
    if only.decided is not None:
        query = query.where(decision.id.is_not(None) if only.decided else decision.id.is_(None))
    return query


def noise_report(
    session: Session,
    job: TrainingJob,
    *,
    only: ReportFilter = ReportFilter(),
    sort: str,
    limit: int | None,
    offset: int = 0,
) -> tuple[list[ReportRow], int]:
    """Rows of the noise report; ``sort`` is a key of ``SORTS``, prefixed with '-' for descending."""
    require_succeeded(job)
    column = SORTS.get(sort.lstrip("-"))
    if column is None:
        raise InvalidInput(
            f"sort must be one of {sorted(SORTS)} (optionally '-'-prefixed), got {sort!r}.", field="sort"
        )
    query = _report_query(job, only)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    order = column.desc() if sort.startswith("-") else column.asc()
    # Equal probabilities (every mask of a clean dataset is about 1) are told apart by the score.
    ties = NoiseFlag.loss.asc() if sort.startswith("-") else NoiseFlag.loss.desc()
    query = query.order_by(order, ties, Sample.file_name).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    dataset = session.get(Dataset, job.dataset_id)
    label_map = label_map_of(dataset) if dataset is not None else LabelMap()
    return [
        _row(f, name, frac, pixels, annotator, batch_id, choice, label_map)
        for f, name, frac, pixels, annotator, batch_id, choice in session.execute(query).all()
    ], total


def _row(
    f: NoiseFlag,
    name: str,
    frac: float | None,
    pixels: int | None,
    annotator: str,
    batch_id: uuid.UUID,
    choice: ReviewChoice | None,
    label_map: LabelMap,
) -> ReportRow:
    # A two-class map has one structure: nothing to tell apart.
    fits = class_fits(f.class_dice, label_map) if label_map.num_classes > 2 else ()
    worst = _worst(fits)
    return ReportRow(
        f.sample_id,
        name,
        f.annotation_id,
        f.clean_probability,
        f.flagged,
        f.loss,
        f.round_decided,
        f.held_out,
        f.decided_by,
        frac is not None,
        frac,
        pixels,
        annotator,
        batch_id,
        None if choice is None else choice.value,
        None if worst is None else worst.name,
        None if worst is None else worst.dice_to_prediction,
        fits,
        f.withheld_because,
    )


def gmm_rounds(session: Session, job: TrainingJob) -> list[GmmRound]:
    """Every GMM fit of the job, in round order (applied or not)."""
    require_succeeded(job)
    return list(session.scalars(select(GmmRound).where(GmmRound.job_id == job.id).order_by(GmmRound.round)))


def annotator_stats(session: Session, job: TrainingJob) -> list[AnnotatorStat]:
    """The job's annotator report, suspects first, then by name."""
    require_succeeded(job)
    query = select(AnnotatorStat).where(AnnotatorStat.job_id == job.id)
    return list(session.scalars(query.order_by(AnnotatorStat.suspect.desc(), AnnotatorStat.annotator)))


def annotator_plot_png(session: Session, job: TrainingJob) -> bytes:
    """The job's annotator report as a bar chart of outline offsets (``gtcorrect.plots``)."""
    rows = annotator_stats(session, job)
    if not rows:
        raise NotFound(f"job {job.id} has no annotator report (no masks with an annotator).")
    return annotator_offsets_png(
        [r.annotator for r in rows],
        [r.relative_offset_px if r.relative_offset_px is not None else r.offset_px for r in rows],
        [r.offset_spread_px for r in rows],
        [r.n_masks for r in rows],
        [r.suspect for r in rows],
    )


@dataclass(frozen=True)
class DatasetAnnotator:
    """One annotator of a dataset: their batches and masks, and their row of the annotator report of
    the dataset's latest succeeded job (None when no such job trained on their masks)."""

    annotator: str
    n_batches: int
    n_masks: int
    last_upload_at: datetime
    job_id: uuid.UUID | None
    report: AnnotatorStat | None


def dataset_annotators(session: Session, dataset: Dataset) -> list[DatasetAnnotator]:
    """Every annotator of the dataset's uploaded batches (consensus and curated batches are the
    service's, not a person's), suspects of the latest report first, then by name."""
    uploaded = (
        select(
            AnnotationBatch.annotator,
            func.count(func.distinct(AnnotationBatch.id)),
            func.count(Annotation.id),
            func.max(AnnotationBatch.created_at),
        )
        .join(Annotation, Annotation.batch_id == AnnotationBatch.id, isouter=True)
        .where(AnnotationBatch.dataset_id == dataset.id, AnnotationBatch.kind == BatchKind.uploaded)
        .group_by(AnnotationBatch.annotator)
    )
    job = session.scalars(
        select(TrainingJob)
        .where(TrainingJob.dataset_id == dataset.id, TrainingJob.status == JobStatus.succeeded)
        .order_by(TrainingJob.finished_at.desc())
        .limit(1)
    ).first()
    stats = {s.annotator: s for s in annotator_stats(session, job)} if job is not None else {}
    out = [
        DatasetAnnotator(
            name,
            batches,
            masks,
            as_utc(last),
            job.id if job is not None and name in stats else None,
            stats.get(name),
        )
        for name, batches, masks, last in session.execute(uploaded).all()
    ]
    return sorted(out, key=lambda a: (not (a.report is not None and a.report.suspect), a.annotator))


def rows_csv(rows: Sequence[object], fields: Sequence[str]) -> str:
    """Objects' attributes as CSV, text cells guarded against formula injection."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields))
    writer.writeheader()
    for row in rows:
        writer.writerow({f: spreadsheet_safe(getattr(row, f)) for f in fields})
    return buffer.getvalue()


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A CSV cell: booleans as ``true``/``false`` (as in the JSON), and a text cell a spreadsheet would run
    as a formula (a file named ``=HYPERLINK(...)``) gets a leading apostrophe, OWASP's guard against CSV
    injection; numbers and other text pass unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def report_csv(rows: list[ReportRow]) -> str:
    return rows_csv(rows, [f.name for f in dataclass_fields(ReportRow) if f.name != "classes"])


def corrected_mask(session: Session, store: ObjectStore, job: TrainingJob, sample_id: uuid.UUID) -> bytes:
    require_succeeded(job)
    row = session.scalar(
        select(CorrectedMask).where(CorrectedMask.job_id == job.id, CorrectedMask.sample_id == sample_id)
    )
    if row is None:
        raise NotFound(
            f"job {job.id} has no corrected mask for sample {sample_id} (only flagged samples are corrected)."
        )
    return read_object(store, row.object_key)


def _flagged(session: Session, job: TrainingJob) -> tuple[LabelMap, list[tuple[str, str, str | None, float]]]:
    """The label map, and per flagged sample, most doubtful first: file name, given mask key, corrected mask
    key (None where withheld), clean probability."""
    require_succeeded(job)
    dataset = session.get(Dataset, job.dataset_id)
    if dataset is None:
        raise NotFound(f"the dataset of job {job.id} no longer exists.")
    rows = session.execute(
        select(Sample.file_name, Annotation.object_key, CorrectedMask.object_key, NoiseFlag.clean_probability)
        .join(NoiseFlag, NoiseFlag.sample_id == Sample.id)
        .join(Annotation, Annotation.id == NoiseFlag.annotation_id)
        .outerjoin(CorrectedMask, and_(CorrectedMask.job_id == job.id, CorrectedMask.sample_id == Sample.id))
        .where(NoiseFlag.job_id == job.id, NoiseFlag.flagged.is_(True))
        .order_by(NoiseFlag.clean_probability, Sample.file_name)
    ).all()
    return label_map_of(dataset), [(name, given, corrected, clean) for name, given, corrected, clean in rows]


def review_task(session: Session, store: ObjectStore, job: TrainingJob) -> bytes:
    """The job's flagged masks as a CVAT for images 1.1 annotation file (``gtcorrect.export.cvat_document``):
    for each flagged sample its proposed correction, or the given mask where none is proposed, for a
    reviewer to fix in CVAT and upload back as a batch (the CVAT import). Masks are read one at a time."""
    label_map, rows = _flagged(session, job)

    def masks() -> Iterator[tuple[str, np.ndarray]]:
        for file_name, given_key, corrected_key, _ in rows:
            data = read_object(store, corrected_key or given_key)
            yield file_name, read_mask(data, num_classes=label_map.num_classes)

    return cvat_document(masks(), label_map, f"gtcorrect job {job.id}: flagged masks")


def review_task_label_studio(session: Session, store: ObjectStore, job: TrainingJob) -> bytes:
    """The job's flagged masks as Label Studio tasks (``gtcorrect.label_studio.review_tasks``, JSON): per
    flagged sample the proposed correction and the given mask as predictions, the correction's model
    version the job's model id (the job id where it has none). A reviewer imports it into a Label Studio
    project with the images, submits the right masks, and uploads the project's JSON export back as a
    batch (the Label Studio import)."""
    label_map, rows = _flagged(session, job)
    model_id = session.scalar(select(Model.id).where(Model.job_id == job.id))

    def items() -> Iterator[ReviewItem]:
        for file_name, given_key, corrected_key, clean_probability in rows:
            given = read_mask(read_object(store, given_key), num_classes=label_map.num_classes)
            proposed = None
            if corrected_key is not None:
                proposed = read_mask(read_object(store, corrected_key), num_classes=label_map.num_classes)
            yield ReviewItem(file_name, given, proposed, 1.0 - clean_probability)

    tasks = review_tasks(items(), label_map, str(model_id or job.id))
    return json.dumps(tasks, separators=(",", ":")).encode()


def given_mask(session: Session, store: ObjectStore, job: TrainingJob, sample_id: uuid.UUID) -> bytes:
    """The mask the job trained on for one sample (PNG, class indices at the image's size)."""
    return read_object(store, _given(session, job, sample_id).object_key)


def _given(session: Session, job: TrainingJob, sample_id: uuid.UUID) -> Annotation:
    require_succeeded(job)
    row = session.scalar(
        select(Annotation)
        .join(NoiseFlag, NoiseFlag.annotation_id == Annotation.id)
        .where(NoiseFlag.job_id == job.id, NoiseFlag.sample_id == sample_id)
    )
    if row is None:
        raise NotFound(f"sample {sample_id} is not in the noise report of job {job.id}.")
    return row


def overlay_png(
    session: Session, store: ObjectStore, job: TrainingJob, sample_id: uuid.UUID, show: str = "both"
) -> bytes:
    """The image with the given mask (amber) and, where proposed, the correction (cyan); ``show``: both,
    given or proposed (``gtcorrect.export.overlay``)."""
    given = _given(session, job, sample_id)
    sample = session.get(Sample, sample_id)
    assert sample is not None  # the flag references it
    image = read_image(read_object(store, sample.object_key), name=sample.file_name)
    given_mask = read_image(read_object(store, given.object_key), name="given mask", keep_values=True)[
        :, :, 0
    ]
    corrected = session.scalar(
        select(CorrectedMask.object_key).where(
            CorrectedMask.job_id == job.id, CorrectedMask.sample_id == sample_id
        )
    )
    proposed = None
    if corrected is not None:
        proposed = read_image(read_object(store, corrected), name="corrected mask", keep_values=True)[:, :, 0]
    return encode_png(overlay(image, given_mask, proposed, show))


def corrected_entries(session: Session, job: TrainingJob) -> list[tuple[str, ZipSource]]:
    """(archive entry name, object key) for every corrected mask; names are sample stems + '.png'. A job
    that proposes none gets one README.txt saying why, rather than an empty archive."""
    require_succeeded(job)
    rows = session.execute(
        select(Sample.file_name, Sample.id, CorrectedMask.object_key)
        .join(CorrectedMask, CorrectedMask.sample_id == Sample.id)
        .where(CorrectedMask.job_id == job.id)
        .order_by(Sample.file_name)
    ).all()
    entries: list[tuple[str, ZipSource]] = []
    used: set[str] = set()
    if not rows:
        corrections = (job.quality or {}).get("corrections") or {}
        why = corrections.get("reason") or "this job's method makes no corrections"
        note = f"Job {job.id} proposes no corrected mask: {why}.\nIts noise report still ranks every mask.\n"
        return [("README.txt", note.encode())]
    for file_name, sample_id, key in rows:
        name = f"{PurePosixPath(file_name).stem}.png"
        if name in used:  # img.jpg and img.png both corrected: keep both, told apart by id
            name = f"{PurePosixPath(file_name).stem}_{sample_id}.png"
        used.add(name)
        entries.append((name, key))
    return entries


class _Sink:
    """A write-only, unseekable file for ``zipfile``: the chunks written so far are taken with ``take``."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._pos = 0

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        return None

    def take(self) -> bytes:
        data, self._chunks = b"".join(self._chunks), []
        return data


def stream_zip(store: ObjectStore, entries: Sequence[tuple[str, ZipSource]]) -> Iterator[bytes]:
    """A zip archive of (name, source) entries, produced one entry at a time (never the whole archive
    in memory)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:  # type: ignore[call-overload]
        for name, source in entries:
            if isinstance(source, str):
                source = read_object(store, source)
            archive.writestr(name, source if isinstance(source, bytes) else source())
            yield sink.take()
    yield sink.take()


def plot_rounds(store: ObjectStore, job: TrainingJob) -> list[int]:
    require_succeeded(job)
    prefix = f"{keys.job_prefix(job.project_id, job.id)}plots/"
    return sorted(int(m.group(1)) for key in store.list(prefix) if (m := _PLOT.search(key)))


def plot_png(store: ObjectStore, job: TrainingJob, round_k: int) -> bytes:
    require_succeeded(job)
    try:
        return store.get(keys.plot(job.project_id, job.id, f"gmm_round_{round_k}"))
    except ObjectNotFound as exc:
        raise NotFound(f"job {job.id} has no GMM plot for round {round_k}.") from exc
