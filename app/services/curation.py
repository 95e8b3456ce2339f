"""Curated annotation versions: a succeeded job plus its review decisions become a new, immutable
annotation batch that training, export and review treat like any other.

Per sample of the job's noise report: an accepted correction contributes the corrected mask, a kept
original (or, with ``undecided="keep"``, an undecided sample) the mask the job trained on, and a sample
sent for re-annotation is left out. The masks are copied into the batch's own objects, so the batch
stays whole whatever happens to the job; the batches the masks came from are never changed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import (
    Annotation,
    AnnotationBatch,
    BatchKind,
    CorrectedMask,
    Dataset,
    NoiseFlag,
    ReviewChoice,
    Sample,
    TrainingJob,
)
from app.errors import Conflict
from app.services.annotations import add_mask, derived_batch
from app.services.datasets import label_map_of
from app.services.objects import read_object
from app.services.reports import require_succeeded
from app.services.reviews import Reviewer, check_text, current_decisions
from app.storage.base import ObjectStore
from gtcorrect.data import read_mask

Undecided = Literal["keep", "exclude"]


def _sources(session: Session, job: TrainingJob) -> list[tuple[NoiseFlag, Annotation, Sample, str | None]]:
    """(flag, given annotation, sample, corrected mask key or None) per sample of the job."""
    rows = session.execute(
        select(NoiseFlag, Annotation, Sample, CorrectedMask.object_key)
        .join(Annotation, Annotation.id == NoiseFlag.annotation_id)
        .join(Sample, Sample.id == NoiseFlag.sample_id)
        .outerjoin(
            CorrectedMask,
            (CorrectedMask.job_id == job.id) & (CorrectedMask.sample_id == NoiseFlag.sample_id),
        )
        .where(NoiseFlag.job_id == job.id)
        .order_by(Sample.file_name)
    ).all()
    return [(f, a, s, k) for f, a, s, k in rows]


def create_curated_batch(
    session: Session,
    store: ObjectStore,
    job: TrainingJob,
    reviewer: Reviewer,
    *,
    undecided: Undecided = "keep",
    annotator: str = "",
    note: str = "",
) -> AnnotationBatch:
    """Turn ``job`` and its current decisions into an accepted batch of kind ``curated``."""
    require_succeeded(job)
    annotator = check_text("annotator", annotator, 200) or f"curated from job {job.id}"
    note = check_text("note", note, 2000)
    decisions = current_decisions(session, job)
    chosen: list[tuple[Sample, str, str]] = []  # sample, object key to copy, origin
    origins: Counter[str] = Counter()
    for flag, given, sample, corrected_key in _sources(session, job):
        decision = decisions.get(flag.sample_id)
        if decision == ReviewChoice.accept_correction and corrected_key is not None:
            chosen.append((sample, corrected_key, "corrected"))
        elif decision == ReviewChoice.keep_original:
            chosen.append((sample, given.object_key, "original"))
        elif decision is None and undecided == "keep":
            chosen.append((sample, given.object_key, "undecided"))
        else:
            origins["left_out"] += 1
    if not chosen:
        raise Conflict(f"job {job.id}'s decisions leave no mask for a curated version.")
    origins.update(origin for _, _, origin in chosen)
    source_batches = sorted({str(b) for b in session.scalars(_given_batches(job))})
    dataset = session.get(Dataset, job.dataset_id)
    assert dataset is not None  # the job's dataset: its rows cascade with it
    provenance = {
        "job_id": str(job.id),
        "source_batches": source_batches,
        "undecided": undecided,
        "decided_by": reviewer.name,
        "decisions": {c.value: n for c, n in Counter(decisions.values()).items()},
        "masks": dict(origins),
    }
    batch = derived_batch(session, dataset, BatchKind.curated, annotator, note, provenance)
    batch.report = {"accepted": len(chosen), "files": _copy_masks(session, store, dataset, batch, chosen)}
    session.flush()
    return batch


def _given_batches(job: TrainingJob) -> Any:
    return (
        select(Annotation.batch_id)
        .join(NoiseFlag, NoiseFlag.annotation_id == Annotation.id)
        .where(NoiseFlag.job_id == job.id)
        .distinct()
    )


def _copy_masks(
    session: Session,
    store: ObjectStore,
    dataset: Dataset,
    batch: AnnotationBatch,
    chosen: list[tuple[Sample, str, str]],
) -> list[dict[str, str]]:
    report: list[dict[str, str]] = []
    k = label_map_of(dataset).num_classes
    for sample, source_key, origin in chosen:
        # Corrected masks are stored to be looked at (0/255 for two classes); annotations hold indices.
        mask = read_mask(read_object(store, source_key), num_classes=k, name=f"mask of {sample.file_name}")
        ann_id = add_mask(session, store, dataset, batch, sample, mask)
        report.append(
            {
                "sample": sample.file_name,
                "sample_id": str(sample.id),
                "annotation_id": str(ann_id),
                "origin": origin,
            }
        )
    session.flush()
    return report


def curated_versions(session: Session, job: TrainingJob) -> list[AnnotationBatch]:
    """The curated batches made from ``job``'s decisions, oldest first (the review page lists them)."""
    rows = session.scalars(
        select(AnnotationBatch)
        .where(AnnotationBatch.dataset_id == job.dataset_id, AnnotationBatch.kind == BatchKind.curated)
        .order_by(AnnotationBatch.created_at, AnnotationBatch.id)
    )
    return [b for b in rows if (b.provenance or {}).get("job_id") == str(job.id)]
