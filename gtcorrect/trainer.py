"""The one training API: ``fit`` runs any method of ``TrainConfig.method`` on ``TrainingData``.

Methods (same network, schedule and data): "gt" (G-T correcting, ``gtcorrect.gt``), "noisy"/"clean"
(plain L_seg on the given masks), "gmm_select" and "coteaching" (``gtcorrect.methods``).
Shape legend: N images, C channels, S size (``TrainConfig.image_size``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from gtcorrect.assessment import assess, place
from gtcorrect.checkpoint import Checkpoint
from gtcorrect.config import TrainConfig, check_config
from gtcorrect.errors import InvalidTrainingInput
from gtcorrect.gt import run_gt
from gtcorrect.loop import Run
from gtcorrect.methods import run_coteaching, run_gmm_select, run_plain
from gtcorrect.metrics import class_dice
from gtcorrect.quality import holdout_indices
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
        out = assess(run, keep, data, train_idx, held_idx)
        metrics = run.val_metrics(keep)
    if out.quality.validation is not None and out.quality.validation.source == "held_out":
        metrics["holdout_dice"] = out.quality.validation.dice
    state = run.state
    rounds = list(state.rounds) + ([out.final_round] if out.final_round is not None else [])
    return FitResult(
        ids=list(data.ids),
        clean_prob=out.clean_prob,
        flagged=out.flagged,
        round_decided=place(state.round_decided, np.full(held_idx.size, -1), train_idx, held_idx),
        sample_loss=out.score,
        rounds=rounds,
        corrected=out.corrected,
        model=run.bundle(keep, metrics),
        history=list(state.history),
        metrics=metrics,
        held_out=np.isin(np.arange(len(data.ids)), held_idx),
        withheld=out.withheld,
        quality=out.quality,
        predicted=out.predicted,
        decided_by=out.decided_by,
        class_dice=None
        if out.predicted is None
        else class_dice(out.predicted, data.masks, data.label_map.num_classes),
        annotator_report=out.annotator_report,
        withheld_because=out.withheld_because,
    )


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
        readers=None if data.readers is None else data.readers.subset(idx),
    )


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
