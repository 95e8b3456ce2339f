"""The self-test of a finished run: copies of masks it trusts, corrupted with the engine's own noise
simulator (``gtcorrect.noise``: known truth), scored under the kept network's probabilities (no new
forward pass) and judged by the run's own split: how many wrong masks it catches (recall), how often it
flags a correct one (precision), whether confident correcting brings the copies back, and how well the
image's edges tell the copies from their originals. ``gtcorrect.quality`` reads it for its gate.
Shape legend: M masks, K classes, S size, C channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from gtcorrect.boundary import edge_auroc
from gtcorrect.config import TrainConfig
from gtcorrect.gstage import ScoreMixture
from gtcorrect.losses import per_sample_loss
from gtcorrect.metrics import foreground_dice
from gtcorrect.noise import PRESETS, simulate_noise
from gtcorrect.tstage import class_thresholds, confident_flags, hard_correction

Fetch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
# Flags (M,) bool for masks (M, S, S) from their network scores (M,) and images (M, C, S, S) or None.
Judge = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]


@dataclass(frozen=True)
class Calibration:
    """The self-test: ``n`` trusted masks corrupted with preset ``regime`` and judged by the run."""

    n: int
    regime: str
    recall: float  # share of the corrupted copies the run's mixture flags
    precision: float  # flagged copies / (flagged copies + flagged uncorrupted originals)
    dice_corrupted: float  # mean Dice(copy, original)
    dice_corrected: float  # mean Dice(corrected copy, original)
    dice_clean_corrected: float  # mean Dice(corrected original, original): what correcting costs a clean mask
    gain_ratio: float  # (dice_corrected - dice_corrupted) / mean share of the copy that correcting changed
    # How well the outlines' image-edge alignment (gtcorrect.boundary) tells the copies from their originals
    # (AUROC; None without images or without outlines).
    edge_auroc: float | None = None
    # The flagged masks' mean disagreement with the network (1 - Dice(given, prediction)): the preset whose
    # copies' pixel noise (1 - dice_corrupted) lies closest to it gives the headline figures.
    flagged_disagreement: float | None = None
    by_regime: dict[str, dict[str, float | None]] = field(default_factory=dict)  # recall, precision, noise


def log_probs(probs: np.ndarray) -> torch.Tensor:
    """Probabilities (M, K, S, S) as logits: per-sample scores of new masks need no new forward pass."""
    return torch.log(torch.as_tensor(probs, dtype=torch.float32).clamp_min(1e-7))


def score_masks(probs: np.ndarray, masks: np.ndarray, kind: str, floor: float) -> np.ndarray:
    """Per-sample score (M,) of masks (M, S, S) under fixed network probabilities (M, K, S, S)."""
    if probs.shape[0] == 0:
        return np.zeros(0)
    kind = "ce+dice" if kind == "trajectory" else kind  # one network, one epoch: the plain score
    target = torch.as_tensor(masks, dtype=torch.int64)
    return per_sample_loss(log_probs(probs), target, kind, floor=floor).double().numpy()


def self_test(
    probs: np.ndarray,
    masks: np.ndarray,
    mixture: ScoreMixture,
    thresholds: np.ndarray | None,
    config: TrainConfig,
    regime: str,
    images: np.ndarray | None = None,
    judge: Judge | None = None,
) -> Calibration | None:
    """Corrupt trusted masks (M, S, S) with preset ``regime`` (known truth), score them under their
    images' network probabilities (M, K, S, S), judge them (by default the network-score ``mixture``)
    and correct them; None when there are fewer than 4. With their images (M, C, S, S), also how well
    edge alignment tells copies from originals."""
    m = masks.shape[0]
    if m < 4:
        return None
    g = config.g
    if judge is None:
        judge = lambda scores, _masks, _images: mixture.clean_prob(scores) <= g.tau  # noqa: E731
    copies = np.stack(simulate_noise(list(masks), PRESETS[regime](1.0), config.seed).masks)
    copy_scores = score_masks(probs, copies, g.sample_loss, g.confident_floor)
    orig_scores = score_masks(probs, masks, g.sample_loss, g.confident_floor)
    caught = judge(copy_scores, copies, images)
    false = judge(orig_scores, masks, images)
    th = thresholds if thresholds is not None else class_thresholds(probs, masks, None, 0.0)
    floor = config.t.confidence_floor
    corrected = hard_correction(probs, copies, confident_flags(probs, copies, th, floor))
    clean_corrected = hard_correction(probs, masks, confident_flags(probs, masks, th, floor))
    before = foreground_dice(copies, masks).mean()
    after = foreground_dice(corrected, masks).mean()
    changed = float(np.mean(1.0 - foreground_dice(corrected, copies)))
    return Calibration(
        n=m,
        regime=regime,
        recall=float(caught.mean()),
        precision=float(caught.sum() / max(caught.sum() + false.sum(), 1)),
        dice_corrupted=float(before),
        dice_corrected=float(after),
        dice_clean_corrected=float(foreground_dice(clean_corrected, masks).mean()),
        gain_ratio=float((after - before) / changed) if changed > 1e-9 else 0.0,
        edge_auroc=None if images is None else edge_auroc(images, masks, copies),
    )


def matched_self_test(
    fetch: Fetch,
    trusted: np.ndarray,
    flagged: np.ndarray,
    mixture: ScoreMixture,
    thresholds: np.ndarray | None,
    config: TrainConfig,
    images: np.ndarray | None = None,
    judge: Judge | None = None,
) -> Calibration | None:
    """The self-test at every preset of ``quality.calibration_regimes``; the headline is the preset whose
    copies are about as wrong (pixel noise) as the flagged masks look to the network (the lightest one
    when nothing is flagged). Detection depends strongly on how wrong a mask is, so a self-test with
    milder copies than the data's noise underestimates the recall, and a stronger one overestimates it."""
    probs, masks = fetch(trusted)
    trusted_images = None if images is None else images[trusted]
    tests = [
        self_test(probs, masks, mixture, thresholds, config, r, trusted_images, judge)
        for r in config.quality.calibration_regimes
    ]
    done = [t for t in tests if t is not None]
    if not done:
        return None
    target = None
    if flagged.size:
        f_probs, f_masks = fetch(flagged)
        target = float(np.mean(1.0 - foreground_dice(f_probs.argmax(1), f_masks)))
    by_regime = {
        t.regime: {
            "recall": t.recall,
            "precision": t.precision,
            "pixel_noise": 1.0 - t.dice_corrupted,
            "edge_auroc": t.edge_auroc,
        }
        for t in done
    }
    best = done[0] if target is None else min(done, key=lambda t: abs(1.0 - t.dice_corrupted - target))
    return replace(best, flagged_disagreement=target, by_regime=by_regime)


def trusted_indices(clean_prob: np.ndarray, scores: np.ndarray, flagged: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` unflagged masks the run trusts most: highest clean probability, then lowest score."""
    candidates = np.flatnonzero(~flagged)
    order = np.lexsort((scores[candidates], -clean_prob[candidates]))
    return np.sort(candidates[order[:n]])
