"""Push a finished job's objects to the store: corrected masks, GMM plots, the model file.

Shape legend: S the training size; H, W a sample's original height and width; K classes.
Every key is deterministic (``app.storage.keys``), so a re-run overwrites instead of duplicating.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np

from app.services.jobstate import ClaimedJob
from app.services.results import CorrectedRecord, SampleVerdict, model_id_for_job
from app.storage import keys
from app.storage.base import ObjectStore
from gtcorrect.config import TrainConfig
from gtcorrect.data import mask_to_png, read_mask, restore_mask, restore_probabilities
from gtcorrect.plots import gmm_histogram_png
from gtcorrect.types import FitResult, json_safe
from worker.fetch import JobInputs

PNG = "image/png"


def full_size_mask(corrected: np.ndarray, size: tuple[int, int], num_classes: int) -> np.ndarray:
    """(S, S) class indices or (K, S, S) soft targets -> (H, W) int64 class indices at ``size``."""
    if corrected.ndim == 3:
        return restore_probabilities(corrected, size).argmax(axis=0).astype(np.int64)
    return restore_mask(corrected, size, num_classes)


def push_corrected(
    store: ObjectStore, job: ClaimedJob, inputs: JobInputs, result: FitResult
) -> list[CorrectedRecord]:
    """Write each proposed corrected mask (the ones the correction gate let through) as a PNG at its
    sample's original size; measure what changed there."""
    records: list[CorrectedRecord] = []
    k = inputs.label_map.num_classes
    for index, corrected in sorted(result.corrected.items()):
        ref = inputs.refs[index]
        full = full_size_mask(np.asarray(corrected), (ref.height, ref.width), k)
        # The given mask is re-read rather than kept: full-size masks of a large dataset would not fit.
        given = read_mask(
            store.get(ref.annotation_key), num_classes=k, name=f"annotation {ref.annotation_id}"
        )
        key = keys.corrected(job.project_id, job.id, ref.sample_id)
        store.put(key, mask_to_png(full, inputs.label_map), PNG)
        changed = full != given
        records.append(CorrectedRecord(ref.sample_id, key, float(np.mean(changed)), int(changed.sum())))
    return records


def push_plots(store: ObjectStore, job: ClaimedJob, result: FitResult, config: TrainConfig) -> list[str]:
    """One GMM loss-histogram PNG per round (G stage, final split) at ``plots/gmm_round_{k}.png``."""
    written = []
    for gmm_round in result.rounds:
        key = keys.plot(job.project_id, job.id, f"gmm_round_{gmm_round.round}")
        store.put(key, gmm_histogram_png(gmm_round, tau=config.g.tau), PNG)
        written.append(key)
    return written


def push_model(store: ObjectStore, job: ClaimedJob, result: FitResult) -> str:
    """The self-describing model file (``ModelBundle.to_bytes``) under the job's deterministic model id."""
    key = keys.model(job.project_id, model_id_for_job(job.id))
    store.put(key, result.model.to_bytes())
    return key


def verdicts(inputs: JobInputs, result: FitResult) -> list[SampleVerdict]:
    """Per-sample G-stage verdicts, aligned with the training data by sample id."""
    if list(result.ids) != list(inputs.data.ids):
        raise RuntimeError("the training result's sample ids do not match the training data's.")
    return [
        SampleVerdict(
            sample_id=ref.sample_id,
            annotation_id=ref.annotation_id,
            clean_probability=float(result.clean_prob[i]),
            flagged=bool(result.flagged[i]),
            loss=float(result.sample_loss[i]),
            round_decided=int(result.round_decided[i]),
            held_out=bool(result.held_out[i]) if result.held_out is not None else False,
            decided_by=None if result.decided_by is None else result.decided_by[i][:64],
            withheld_because=None if result.withheld_because is None else result.withheld_because[i],
            class_dice=None if result.class_dice is None else json_safe(result.class_dice[i].tolist()),
        )
        for i, ref in enumerate(inputs.refs)
    ]


def annotator_rows(result: FitResult) -> list[dict[str, Any]]:
    """The engine's annotator report (``FitResult.annotator_report``, offsets in original pixels) as
    ``AnnotatorStat`` columns."""
    return [dict(row) for row in result.annotator_report]


def round_rows(result: FitResult, tau: float) -> list[dict[str, Any]]:
    """The job's GMM fits as ``gmm_rounds`` columns."""
    return [
        {
            "round": r.round,
            "separation": float(r.separation),
            "mean_clean": float(r.means[0]),
            "mean_noisy": float(r.means[1]),
            "var_clean": float(r.variances[0]),
            "var_noisy": float(r.variances[1]),
            "weight_clean": float(r.weights[0]),
            "weight_noisy": float(r.weights[1]),
            "threshold": float(tau),
            "n_flagged": int(r.n_flagged),
            "n_changed": int(r.n_changed),
            "applied": bool(r.applied),
        }
        for r in result.rounds
    ]


def remove_stale(store: ObjectStore, job_id: uuid.UUID, project_id: uuid.UUID, keep: Iterable[str]) -> int:
    """Delete the job's objects that the final result does not reference (checkpoints, leftovers of an
    earlier attempt); return how many went."""
    wanted = set(keep)
    stale = [key for key in store.list(keys.job_prefix(project_id, job_id)) if key not in wanted]
    for key in stale:
        store.delete(key)
    return len(stale)


def discard_all(store: ObjectStore, job: ClaimedJob) -> int:
    """A failed or cancelled job registered no model: its objects go, and the model file it may have pushed
    before the end (a cancel that arrived while the results were stored)."""
    store.delete(keys.model(job.project_id, model_id_for_job(job.id)))
    return remove_stale(store, job.id, job.project_id, [])
