"""STAPLE and majority consensus on seeded synthetic annotators with known truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gtcorrect.consensus import majority, staple
from gtcorrect.metrics import foreground_dice


def _disc(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(14, size - 14, 2)
    r = rng.integers(5, 10)
    return ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.int64)


def _panel(seed: int = 0, n: int = 20) -> tuple[list[np.ndarray], list[np.ndarray], list[list[int]]]:
    """Three annotators per image: 0 exact, 1 dilates by 4 px, 2 flips 3 % of pixels."""
    rng = np.random.default_rng(seed)
    truth, masks, raters = [], [], []
    for _ in range(n):
        t = _disc(rng)
        wide = ndimage.binary_dilation(t, iterations=4).astype(np.int64)
        speckled = t.copy()
        flip = rng.random(t.shape) < 0.03
        speckled[flip] = 1 - speckled[flip]
        truth.append(t)
        masks.append(np.stack([t, wide, speckled]))
        raters.append([0, 1, 2])
    return truth, masks, raters


def test_staple_recovers_the_truth_and_names_the_dilating_annotator() -> None:
    truth, masks, raters = _panel()
    result = staple(masks, raters, 3)
    assert result.converged
    dice = foreground_dice(np.stack(result.labels), np.stack(truth)).mean()
    vote = foreground_dice(np.stack(majority(masks, 2)), np.stack(truth)).mean()
    assert dice > 0.99 and dice >= vote
    sens, spec = result.sensitivity(), result.specificity()
    # The dilating annotator misses no foreground but draws background as foreground.
    assert sens[1] > 0.99 and spec[1] == pytest.approx(spec.min())
    assert spec[1] < 0.95 < spec[0]
    assert list(result.n_masks) == [20, 20, 20]


def test_staple_with_partial_overlap_estimates_each_annotator_from_their_own_images() -> None:
    truth, masks, raters = _panel(seed=1, n=30)
    # Annotator 1 (dilating) only saw the first ten images; the others saw all.
    masks = [m if i < 10 else m[[0, 2]] for i, m in enumerate(masks)]
    raters = [r if i < 10 else [0, 2] for i, r in enumerate(raters)]
    result = staple(masks, raters, 3)
    assert list(result.n_masks) == [30, 10, 30]
    assert result.specificity()[1] < 0.95
    assert foreground_dice(np.stack(result.labels), np.stack(truth)).mean() > 0.99


def test_majority_breaks_ties_towards_background() -> None:
    a = np.zeros((4, 4), dtype=np.int64)
    b = a.copy()
    b[1, 1] = 1
    assert majority([np.stack([a, b])], 2)[0][1, 1] == 0
    assert majority([np.stack([b, b, a])], 2)[0][1, 1] == 1


@pytest.mark.parametrize(
    ("masks", "raters", "match"),
    [
        ([np.zeros((2, 4, 4), dtype=np.int64)], [[0]], "R = 1 raters"),
        ([np.zeros((2, 4, 4), dtype=np.int64)], [[0, 0]], "distinct"),
        ([np.zeros((1, 4, 4), dtype=np.int64)], [[5]], "0..2"),
        ([np.zeros((1, 4, 4), dtype=np.int64)], [[0], [1]], "2 rater lists"),
    ],
)
def test_staple_names_bad_input(masks: list[np.ndarray], raters: list[list[int]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        staple(masks, raters, 3)


def test_parameters_fitted_on_reduced_masks_label_the_full_size_ones() -> None:
    truth, masks, raters = _panel(seed=2)
    small = [m[:, ::2, ::2] for m in masks]
    result = staple(small, raters, 3)
    full = [result.label(m, r) for m, r in zip(masks, raters, strict=True)]
    assert foreground_dice(np.stack(full), np.stack(truth)).mean() > 0.98
