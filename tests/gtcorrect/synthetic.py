"""Seeded synthetic segmentation data for the engine's tests: ellipses on textured backgrounds.

Shape legend: N images, C = 3 channels, S size. Images are z-scored per image and channel (the
"zscore" policy of ``ModelBundle.normalisation``); masks are (N, S, S) int64 with 1 = the ellipse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from gtcorrect.config import AugmentConfig, GStageConfig, NetConfig, QualityConfig, TrainConfig, TStageConfig
from gtcorrect.types import TrainingData


@dataclass
class SyntheticSet:
    images: np.ndarray  # (N, 3, S, S) float32
    clean: np.ndarray  # (N, S, S) int64
    noisy: np.ndarray  # (N, S, S) int64, corrupted where ``corrupted``
    corrupted: np.ndarray  # (N,) bool

    def training_data(self, noisy: bool = True, with_val: int = 0) -> TrainingData:
        masks = self.noisy if noisy else self.clean
        n = self.images.shape[0] - with_val
        ids = [f"img{i:03d}" for i in range(n)]
        if not with_val:
            return TrainingData(self.images, masks, ids)
        return TrainingData(
            self.images[:n], masks[:n], ids, val_images=self.images[n:], val_masks=self.clean[n:]
        )


def _texture(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma)


def make_shapes(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, 3, S, S) float32 and masks (n, S, S) int64 of one random ellipse each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.int64)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        ry, rx = rng.uniform(0.12, 0.25, 2) * size
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        mask = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
        colour = rng.uniform(0.6, 1.2, 3)
        for ch in range(3):
            background = 2.0 * _texture(rng, size, 1.5)
            images[i, ch] = background + mask * (colour[ch] + 0.5 * _texture(rng, size, 1.0))
        masks[i] = mask
    images -= images.mean(axis=(2, 3), keepdims=True)
    images /= images.std(axis=(2, 3), keepdims=True) + 1e-6
    return images, masks


def disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (yy**2 + xx**2) <= radius**2


CORRUPTIONS = ("dilate", "erode", "shift")


def corrupt(
    mask: np.ndarray, rng: np.random.Generator, strength: int = 4, kinds: tuple[str, ...] = CORRUPTIONS
) -> np.ndarray:
    """Strong corruption of one (S, S) mask: a big dilation, an erosion or a shift, chosen at random."""
    kind = kinds[rng.integers(len(kinds))]
    if kind == "dilate":
        out = ndimage.binary_dilation(mask > 0, disk(strength))
    elif kind == "erode":
        out = ndimage.binary_erosion(mask > 0, disk(max(1, strength // 2)))
    else:
        shift = rng.choice([-1, 1], 2) * rng.integers(strength + 1, 2 * strength + 1, 2)
        out = ndimage.shift((mask > 0).astype(np.float64), shift, order=0) > 0.5
    return out.astype(np.int64)


def make_noisy_set(
    n: int = 40,
    size: int = 32,
    alpha: float = 0.5,
    seed: int = 0,
    strength: int = 4,
    kinds: tuple[str, ...] = CORRUPTIONS,
) -> SyntheticSet:
    """Synthetic set whose first round(alpha n) images (in a seeded random order) have corrupted masks."""
    images, clean = make_shapes(n, size, seed)
    rng = np.random.default_rng(seed + 1)
    corrupted = np.zeros(n, dtype=bool)
    corrupted[rng.permutation(n)[: round(alpha * n)]] = True
    noisy = clean.copy()
    for i in np.flatnonzero(corrupted):
        noisy[i] = corrupt(clean[i], rng, strength, kinds)
    return SyntheticSet(images, clean, noisy, corrupted)


# Tests of the plumbing of flags and corrections on tiny data, where no self-assessment could vouch for
# anything: every flagged mask keeps its correction and nothing is held back.
PLUMBING = QualityConfig(gate=False, val_fraction=0.0)


def plumbing_config(image_size: int, t_epochs: int) -> TrainConfig:
    """A tiny G-T config for the plumbing of files: the paper's split (``g.detector="loss"``) flags some
    masks whatever the evidence, and ``PLUMBING`` keeps every flagged mask's correction."""
    return TrainConfig(
        image_size=image_size,
        batch_size=4,
        net=NetConfig(channels=(4, 8), strides=(2,), num_res_units=0),
        augment=AugmentConfig(enabled=False),
        g=GStageConfig(warmup_epochs=1, rounds_max=1, epochs_per_round=1, detector="loss"),
        t=TStageConfig(
            epochs=t_epochs, early_learning="fixed", early_learning_fixed_epochs=1, rampup_epochs=1
        ),
        quality=PLUMBING,
    )
