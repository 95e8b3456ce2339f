"""The one training API: ``fit`` runs any method of ``TrainConfig.method`` on ``TrainingData``.

Methods (same network, schedule and data): "gt" (G-T correcting, ``gtcorrect.gt``), "noisy"/"clean"
(plain L_seg on the given masks), "gmm_select" and "coteaching" (``gtcorrect.methods``).
Shape legend: N images, C channels, S size (``TrainConfig.image_size``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gtcorrect.bias import apply_bias
from gtcorrect.boundary import edge_alignment
from gtcorrect.checkpoint import Checkpoint
from gtcorrect.config import TrainConfig, check_config
from gtcorrect.errors import InvalidTrainingInput
from gtcorrect.gt import run_gt
from gtcorrect.loop import Run
from gtcorrect.methods import run_coteaching, run_gmm_select, run_plain
from gtcorrect.metrics import foreground_dice
from gtcorrect.quality import Evidence, assess, holdout_indices
from gtcorrect.selftest import Fetch, score_masks
from gtcorrect.types import FitResult, ProgressCallback, StopCheck, TrainingData

_RUNNERS: dict[str, Callable[[Run, Checkpoint | None], str]] = {
    "gt": run_gt,
    "noisy": run_plain,
    "clean": run_plain,
    "gmm_select": run_gmm_select,
    "coteaching": run_coteaching,
}


def fit(
    config: TrainConfig,
    data: TrainingData,
    *,
    device: str | torch.device = "cpu",
    callbacks: Sequence[ProgressCallback] = (),
    should_stop: StopCheck | None = None,
    checkpoint: Callable[[Checkpoint], None] | None = None,
    resume: Checkpoint | None = None,
) -> FitResult:
    """Train ``config.method`` on ``data`` and return the split, corrections and model.

    callbacks get one ``Progress`` per epoch, then one with phase "assessing" when training ends;
    ``should_stop`` is polled before every batch and raises
    ``gtcorrect.errors.TrainingStopped``; ``checkpoint`` receives a ``Checkpoint`` after every epoch,
    and ``fit(..., resume=ckpt)`` with the same config and data continues where it was taken (bit-exact
    on CPU; on CUDA up to the nondeterminism of cuDNN kernels).
    ``FitResult.model`` is the T-stage teacher for "gt" (``config.t.keep="student"`` keeps the student)
    and the (first) network otherwise. ``metrics["val_dice"]`` is present when validation data is given.
    For "noisy"/"clean": clean_prob 1, nothing flagged, no rounds; "gmm_select": the last split;
    "coteaching": the small-loss ranking of the first network (``gtcorrect.methods.run_coteaching``).
    """
    validate_inputs(config, data)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    train_idx, held_idx = holdout_indices(data.images.shape[0], config)
    train_data = data if held_idx.size == 0 else _subset(data, train_idx)
    # Epochs reseed torch's global RNG (dropout); fork it so the caller's RNG stream is left alone.
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        run = Run(config, train_data, dev, callbacks, should_stop, checkpoint)
        keep = _RUNNERS[config.method](run, resume)
        run.announce("assessing")
        held = _held_out(run, keep, data, held_idx)
        predicted = run.predicted(keep)
        metrics = run.val_metrics(keep)
        evidence = _evidence(run, train_data, held, metrics)
        quality, verdict, held_clean = assess(evidence, _fetch(run, keep))
    corrections = dict(run.state.corrections)
    if train_data.annotators is not None and evidence.corrects and config.quality.annotators:
        quality, verdict, corrections = apply_bias(
            config,
            train_data.images,
            np.asarray(train_data.masks),
            train_data.annotators,
            predicted,
            quality,
            verdict,
            corrections,
            trained=run.state.targets.keys(),
        )
    if held.dice is not None:
        metrics["holdout_dice"] = held.dice
    state, n = run.state, data.images.shape[0]

    def full(train: np.ndarray, held_values: np.ndarray, dtype: Any) -> np.ndarray:
        out = np.empty(n, dtype=dtype)
        out[train_idx], out[held_idx] = train, held_values
        return out

    corrections = {int(train_idx[j]): m for j, m in corrections.items()}
    return FitResult(
        ids=list(data.ids),
        clean_prob=full(verdict.clean_prob, held_clean, np.float64),
        flagged=full(verdict.flagged, held_clean <= config.g.tau, bool),
        round_decided=full(state.round_decided, np.full(held_idx.size, -1), np.int64),
        sample_loss=full(state.sample_loss, held.scores, np.float64),
        rounds=list(state.rounds),
        corrected={i: m for i, m in corrections.items() if verdict.proposed[_pos(train_idx, i)]},
        model=run.bundle(keep, metrics),
        history=list(state.history),
        metrics=metrics,
        held_out=full(np.zeros(train_idx.size, bool), np.ones(held_idx.size, bool), bool),
        withheld={i: m for i, m in corrections.items() if not verdict.proposed[_pos(train_idx, i)]},
        quality=quality,
        predicted=_place(predicted, held.predicted, train_idx, held_idx),
    )


def _pos(sorted_idx: np.ndarray, value: int) -> int:
    return int(np.searchsorted(sorted_idx, value))


def _subset(data: TrainingData, idx: np.ndarray) -> TrainingData:
    sizes = data.original_sizes
    return TrainingData(
        images=data.images[idx],
        masks=data.masks[idx],
        ids=[data.ids[i] for i in idx],
        label_map=data.label_map,
        val_images=data.val_images,
        val_masks=data.val_masks,
        original_sizes=None if sizes is None else [sizes[i] for i in idx],
        annotators=None if data.annotators is None else [data.annotators[i] for i in idx],
    )


@dataclass
class _HeldOut:
    dice: float | None  # the kept net's mean Dice against the held-back given masks
    scores: np.ndarray  # (M,) their per-sample scores under the kept net
    alignment: np.ndarray  # (M,) their outlines' edge alignment (gtcorrect.boundary)
    n_total: int  # training + held back
    predicted: np.ndarray  # (M, S, S) uint8: the kept net's prediction


def _place(train: np.ndarray, held: np.ndarray, train_idx: np.ndarray, held_idx: np.ndarray) -> np.ndarray:
    out = np.zeros((train_idx.size + held_idx.size, *train.shape[1:]), dtype=train.dtype)
    out[train_idx], out[held_idx] = train, held
    return out


def _held_out(run: Run, keep: str, data: TrainingData, held_idx: np.ndarray) -> _HeldOut:
    n = data.images.shape[0]
    if held_idx.size == 0:
        empty = np.zeros((0, *data.images.shape[2:]), dtype=np.uint8)
        return _HeldOut(None, np.zeros(0), np.zeros(0), n, empty)
    images = torch.as_tensor(data.images[held_idx], dtype=torch.float32)
    probs = run.probs_of(keep, images)
    masks = np.asarray(data.masks[held_idx], dtype=np.int64)
    g = run.config.g
    dice = float(foreground_dice(probs.argmax(1), masks).mean())
    alignment = edge_alignment(data.images[held_idx], masks)
    scores = score_masks(probs, masks, g.sample_loss, g.confident_floor)
    return _HeldOut(dice, scores, alignment, n, probs.argmax(1).astype(np.uint8))


def _evidence(run: Run, train: TrainingData, held: _HeldOut, metrics: dict[str, float]) -> Evidence:
    """What the assessment reads: the run's state, its training images and masks (``train``) and the
    held-back samples. Validation comes from the held-back samples or, when none are held back, from the
    validation images the caller supplied (``metrics["val_dice"]``)."""
    config, state = run.config, run.state
    supplied = metrics.get("val_dice") if held.dice is None else None
    source = "held_out" if held.dice is not None else None if supplied is None else "supplied"
    return Evidence(
        config=config,
        splits=config.method in ("gt", "gmm_select"),
        corrects=config.method == "gt" and config.t.correction != "none",
        rounds=list(state.rounds),
        clean_prob=np.asarray(state.clean_prob, dtype=np.float64),
        flagged=np.asarray(state.flagged, dtype=bool),
        scores=np.asarray(state.sample_loss, dtype=np.float64),
        thresholds=state.thresholds,
        corrections=state.corrections,
        n_total=held.n_total,
        validation_dice=held.dice if supplied is None else supplied,
        validation_source=source,
        held_scores=held.scores,
        images=train.images,
        masks=np.asarray(train.masks),
        held_alignment=held.alignment,
    )


def _fetch(run: Run, keep: str) -> Fetch:
    def fetch(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masks = run.masks[torch.as_tensor(idx, device=run.device)].cpu().numpy()
        return run.predict_probs(keep, idx), masks

    return fetch


def validate_inputs(config: TrainConfig, data: TrainingData) -> None:
    """Reject what ``TrainingData`` does not already check, naming the value."""
    n, size = data.images.shape[0], config.image_size
    if data.images.shape[2:] != (size, size):
        raise InvalidTrainingInput(
            f"images are {data.images.shape[2]}x{data.images.shape[3]} but config.image_size is {size}."
        )
    if n < config.batch_size:
        raise InvalidTrainingInput(f"got {n} training images, fewer than batch_size {config.batch_size}.")
    if not np.all(np.isfinite(data.images)):
        raise InvalidTrainingInput("images contain NaN or infinite values.")
    if (data.val_images is None) != (data.val_masks is None):
        raise InvalidTrainingInput("val_images and val_masks must be given together.")
    if data.val_images is not None and data.val_masks is not None:
        v = data.val_images.shape
        if len(v) != 4 or v[1:] != data.images.shape[1:] or data.val_masks.shape != (v[0], *v[2:]):
            raise InvalidTrainingInput(
                f"validation arrays {v} / {data.val_masks.shape} do not match "
                f"training images {data.images.shape}."
            )
    check_config(config)
