"""Consensus versions: where several annotators outlined the same samples, one new batch (kind
``consensus``) holds a mask per sample that all of them support, and its provenance says how reliable
each annotator was against it (``gtcorrect.consensus``: STAPLE or a majority vote).

The annotators' confusion matrices are fitted on masks reduced to ``WORK_SIZE`` (a few hundred
kilobytes per mask in memory, whatever the images' size); each sample's full-size consensus is then
made from its full-size masks, one sample at a time. A sample only one annotator outlined keeps that
mask (with one mask there is nothing to agree on). The source batches are never changed.

Per sample the report says how far its readers agree (mean pairwise Dice, ``agreement``) and whether it
is contested (below ``CONTESTED_BELOW``): the cases worth a second look whatever the consensus says.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Annotation, AnnotationBatch, BatchKind, BatchStatus, Dataset, Sample
from app.errors import InvalidInput
from app.services.annotations import add_mask, check_batches, derived_batch
from app.services.datasets import label_map_of
from app.services.objects import read_object
from app.services.reviews import check_text
from app.storage.base import ObjectStore
from gtcorrect.consensus import Consensus, majority, staple
from gtcorrect.data import read_mask, resize_mask
from gtcorrect.metrics import foreground_dice

Method = Literal["staple", "majority"]
WORK_SIZE = 256
# A sample whose readers agree less than this (mean pairwise Dice) is "contested": a case to look at.
CONTESTED_BELOW = 0.7
MIN_READER_WEIGHT = 0.01  # an annotator who agrees with the consensus nowhere is still drawn, rarely
TrainOn = Literal["consensus", "every_reader"]


@dataclass(frozen=True)
class ReaderPanel:
    """Who drew which mask of which sample: per sample (in file-name order), (annotator index, key)."""

    annotators: list[str]
    samples: list[Sample]
    masks: list[list[tuple[int, str]]]
    batches: list[uuid.UUID]


def reader_panel(session: Session, dataset: Dataset, batch_ids: list[uuid.UUID] | None) -> ReaderPanel:
    """The chosen batches' masks by sample and annotator (an annotator's later batch replaces their
    earlier one): what a consensus agrees, and what a job learning from every reader learns from."""
    query = select(AnnotationBatch).where(
        AnnotationBatch.dataset_id == dataset.id, AnnotationBatch.status == BatchStatus.accepted
    )
    if batch_ids is None:
        query = query.where(AnnotationBatch.kind == BatchKind.uploaded)
    else:
        query = query.where(AnnotationBatch.id.in_(batch_ids))
        check_batches(session, dataset, batch_ids)
    chosen = list(session.scalars(query.order_by(AnnotationBatch.created_at, AnnotationBatch.id)))
    names = sorted({b.annotator for b in chosen})
    who = {b.id: names.index(b.annotator) for b in chosen}
    rank = {b.id: i for i, b in enumerate(chosen)}
    rows = session.execute(
        select(Sample, Annotation)
        .join(Annotation, Annotation.sample_id == Sample.id)
        .where(Annotation.batch_id.in_(list(who)))
    ).all()
    # One mask per annotator and sample: an annotator's later batch replaces their earlier one.
    latest: dict[tuple[uuid.UUID, int], tuple[int, Sample, str]] = {}
    for sample, ann in rows:
        slot = (sample.id, who[ann.batch_id])
        if slot not in latest or rank[ann.batch_id] > latest[slot][0]:
            latest[slot] = (rank[ann.batch_id], sample, ann.object_key)
    per_sample: dict[uuid.UUID, list[tuple[int, str]]] = defaultdict(list)
    samples: dict[uuid.UUID, Sample] = {}
    for (sample_id, annotator), (_, sample, key) in latest.items():
        per_sample[sample_id].append((annotator, key))
        samples[sample_id] = sample
    order = sorted(samples.values(), key=lambda s: (s.file_name, str(s.id)))
    shared = sum(len(per_sample[s.id]) > 1 for s in order)
    if len(names) < 2 or shared == 0:
        raise InvalidInput(
            f"a consensus needs samples outlined by at least two annotators; the chosen batches have "
            f"{len(names)} annotator(s) ({', '.join(names) or 'none'}) and {shared} shared samples."
        )
    return ReaderPanel(names, order, [sorted(per_sample[s.id]) for s in order], [b.id for b in chosen])


def create_consensus_batch(
    session: Session,
    store: ObjectStore,
    dataset: Dataset,
    batch_ids: list[uuid.UUID] | None,
    method: Method = "staple",
    *,
    annotator: str = "",
    note: str = "",
) -> AnnotationBatch:
    """An accepted batch of kind ``consensus`` over the chosen batches (default: every accepted uploaded
    batch of the dataset); its provenance holds each annotator's sensitivity and specificity (STAPLE)
    and mean Dice against the consensus."""
    annotator = check_text("annotator", annotator, 200) or f"consensus ({method})"
    note = check_text("note", note, 2000)
    panel = reader_panel(session, dataset, None if batch_ids is None else list(dict.fromkeys(batch_ids)))
    k = label_map_of(dataset).num_classes

    def stack(masks: list[tuple[int, str]], size: int | None) -> np.ndarray:
        read = [read_mask(read_object(store, key), num_classes=k) for _, key in masks]
        return np.stack([m if size is None else resize_mask(m, size) for m in read]).astype(np.uint8)

    small = [stack(m, WORK_SIZE) for m in panel.masks]
    raters = [[a for a, _ in m] for m in panel.masks]
    fit = staple(small, raters, len(panel.annotators), k) if method == "staple" else None
    agreed = fit.labels if fit is not None else majority(small, k)
    agreement = [_agreement(m) for m in small]
    provenance = {
        "method": method,
        "source_batches": [str(b) for b in panel.batches],
        "shared_samples": sum(len(r) > 1 for r in raters),
        "single_samples": sum(len(r) == 1 for r in raters),
        "contested_below": CONTESTED_BELOW,
        "contested_samples": sum(a is not None and a < CONTESTED_BELOW for a in agreement),
        "work_size": WORK_SIZE,
        "annotators": _annotator_stats(panel, small, raters, agreed, fit),
        **({} if fit is None else {"iterations": fit.iterations, "converged": fit.converged}),
    }
    batch = derived_batch(session, dataset, BatchKind.consensus, annotator, note, provenance)
    files = []
    for sample, masks, who, agreed_by in zip(panel.samples, panel.masks, raters, agreement, strict=True):
        full = stack(masks, None)
        if len(who) == 1:
            label = full[0].astype(np.int64)
        elif fit is not None:
            label = fit.label(full, who)
        else:
            label = majority([full], k)[0]
        ann_id = add_mask(session, store, dataset, batch, sample, label)
        ids = {"sample_id": str(sample.id), "annotation_id": str(ann_id)}
        contested = agreed_by is not None and agreed_by < CONTESTED_BELOW
        readers = {"masks": len(who), "agreement": agreed_by, "contested": contested}
        files.append({"sample": sample.file_name, **ids, **readers})
    batch.report = {"accepted": len(files), "files": files}
    session.flush()
    return batch


def reader_selection(batch: AnnotationBatch) -> dict[str, Any]:
    """What a job learning from every reader of consensus ``batch`` needs (stored in its selection):
    the source batches, and each annotator's weight, their mean Dice against the consensus (at least
    ``MIN_READER_WEIGHT``; 1 for an annotator who shares no sample, whose masks are then never drawn
    against another's)."""
    provenance = batch.provenance or {}
    weights = {
        str(row["annotator"]): 1.0
        if row.get("dice_vs_consensus") is None
        else max(float(row["dice_vs_consensus"]), MIN_READER_WEIGHT)
        for row in provenance.get("annotators", [])
    }
    return {"batches": list(provenance.get("source_batches", [])), "weights": weights}


def _annotator_stats(
    panel: ReaderPanel,
    small: list[np.ndarray],
    raters: list[list[int]],
    agreed: list[np.ndarray],
    fit: Consensus | None,
) -> list[dict[str, object]]:
    """Per annotator: masks, masks on shared samples, mean Dice against the consensus there, and (STAPLE)
    sensitivity and specificity."""
    dices: dict[int, list[float]] = defaultdict(list)
    counts: dict[int, int] = defaultdict(int)
    for masks, who, consensus in zip(small, raters, agreed, strict=True):
        for mask, a in zip(masks, who, strict=True):
            counts[a] += 1
            if len(who) > 1:
                dices[a].append(float(foreground_dice(mask[None], consensus[None])[0]))
    out: list[dict[str, object]] = []
    for a, name in enumerate(panel.annotators):
        row: dict[str, object] = {
            "annotator": name,
            "masks": counts[a],
            "shared_masks": len(dices[a]),
            "dice_vs_consensus": float(np.mean(dices[a])) if dices[a] else None,
        }
        if fit is not None:
            row["sensitivity"] = _finite(fit.sensitivity()[a])
            row["specificity"] = _finite(fit.specificity()[a])
        out.append(row)
    return out


def _agreement(masks: np.ndarray) -> float | None:
    """How far the readers of one sample agree: the mean Dice over every pair of their masks (R, S, S) at
    the work size, foreground classes pooled (two empty masks agree; one reader marking what another did
    not scores 0). None with one reader."""
    pairs = list(itertools.combinations(range(len(masks)), 2))
    if not pairs:
        return None
    first, second = zip(*pairs, strict=True)
    return float(foreground_dice(masks[list(first)], masks[list(second)]).mean())


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
