"""The job's own examples of wrong masks: corrupted copies of a pool of its masks (known truth).

A job cannot know which of its masks are wrong, but it can make wrong masks: copies of a random pool of
its training masks, corrupted with the engine's noise simulator (``gtcorrect.noise``), one copy per
family (dilation, erosion, an affine move, a coarse polygon) at the ``strong`` preset's lengths. The
detector of ``gtcorrect.verdict`` learns what such copies look like next to the given masks, on this
data and under this network; the copies also tell how many wrong masks the verdict catches (its recall,
per family and for a family it was not trained on) and whether confident correcting repairs them
(``correction_check``). Shape legend: P pool masks, Q = P x families copies, K classes, S size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import cast

import numpy as np

from gtcorrect.metrics import foreground_dice
from gtcorrect.noise import NOISE_TYPES, PRESETS, simulate_noise
from gtcorrect.tstage import class_thresholds, confident_flags, hard_correction

FAMILIES: tuple[str, ...] = ("dilation", "erosion", "affine", "polygon")


@dataclass(frozen=True)
class Copies:
    """Corrupted copies of pool masks: ``masks`` (Q, S, S), the pool position each came from
    (``source``), its family and its pixel noise (1 - Dice with the original)."""

    masks: np.ndarray
    source: np.ndarray
    family: np.ndarray
    pixel_noise: np.ndarray

    def __len__(self) -> int:
        return int(self.source.size)


def pool_indices(n: int, size: int, seed: int) -> np.ndarray:
    """``size`` of n training masks (all when fewer), chosen by ``seed``, sorted."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 6151]).choice(n, size=size, replace=False))


def make_copies(masks: np.ndarray, families: tuple[str, ...], strength: str, seed: int) -> Copies:
    """One copy of every pool mask (P, S, S) per family, corrupted at preset ``strength``'s lengths."""
    if strength not in PRESETS:
        raise ValueError(f"unknown noise preset {strength!r}; choose from {sorted(PRESETS)}.")
    unknown = sorted(set(families) - set(NOISE_TYPES))
    if unknown:
        raise ValueError(f"unknown corruption families {unknown}; choose from {list(NOISE_TYPES)}.")
    out: list[np.ndarray] = []
    family: list[str] = []
    noise: list[float] = []
    for k, name in enumerate(families):
        weights = cast(tuple[float, float, float, float, float], tuple(float(t == name) for t in NOISE_TYPES))
        spec = dataclasses.replace(PRESETS[strength](1.0), weights=weights)
        result = simulate_noise(list(np.asarray(masks, dtype=np.int64)), spec, seed * 31 + k)
        out.extend(result.masks)
        # An empty mask gets a spurious blob whatever the family: it is counted under that family.
        family.extend([name] * len(result.masks))
        noise.extend(t.pixel_noise for t in result.truth)
    p = masks.shape[0]
    return Copies(
        masks=np.stack(out) if out else np.zeros((0, *masks.shape[1:]), np.int64),
        source=np.tile(np.arange(p), len(families)),
        family=np.array(family, dtype=object),
        pixel_noise=np.array(noise, dtype=np.float64),
    )


@dataclass(frozen=True)
class CorrectionCheck:
    """Confident correcting (``gtcorrect.tstage``) applied to the copies and to their originals."""

    dice_corrupted: float  # mean Dice(copy, original)
    dice_corrected: float  # mean Dice(corrected copy, original)
    dice_clean_corrected: float  # mean Dice(corrected original, original): what correcting costs a right mask
    gain_ratio: float  # (dice_corrected - dice_corrupted) / mean share of the copy that correcting changed


def correction_check(
    probs: np.ndarray,
    originals: np.ndarray,
    copies: Copies,
    thresholds: np.ndarray | None,
    floor: float,
) -> CorrectionCheck | None:
    """Correct every copy with the network's probabilities of its pool image (P, K, S, S); None with
    fewer than 4 copies."""
    if len(copies) < 4:
        return None
    p = probs[copies.source]
    orig = np.asarray(originals)[copies.source]
    th = thresholds if thresholds is not None else class_thresholds(probs, originals, None, 0.0)
    corrected = hard_correction(p, copies.masks, confident_flags(p, copies.masks, th, floor))
    clean_corrected = hard_correction(probs, originals, confident_flags(probs, originals, th, floor))
    before = float(foreground_dice(copies.masks, orig).mean())
    after = float(foreground_dice(corrected, orig).mean())
    changed = float(np.mean(1.0 - foreground_dice(corrected, copies.masks)))
    return CorrectionCheck(
        dice_corrupted=before,
        dice_corrected=after,
        dice_clean_corrected=float(foreground_dice(clean_corrected, originals).mean()),
        gain_ratio=(after - before) / changed if changed > 1e-9 else 0.0,
    )
