"""Image-edge evidence (gtcorrect.boundary), on seeded synthetic images whose objects have visible edges."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from gtcorrect.boundary import edge_alignment, mask_alignment, outline
from gtcorrect.evidence import coarseness
from gtcorrect.noise import simulate_noise, strong_mixed
from tests.gtcorrect.synthetic import make_noisy_set


def test_outline_marks_both_sides_of_every_boundary() -> None:
    mask = np.zeros((6, 6), dtype=np.int64)
    mask[2:4, 2:4] = 1
    line = outline(mask)
    assert line[2:4, 2:4].all() and line[1, 2] and line[2, 1] and not line[0, 0]
    assert not outline(np.zeros((6, 6))).any()
    assert np.isnan(mask_alignment(np.ones((6, 6)), np.zeros((6, 6))))


def test_the_true_outline_follows_the_edges_better_than_corrupted_ones() -> None:
    data = make_noisy_set(40, 64, alpha=0.0, seed=3)
    clean = edge_alignment(data.images, data.clean)
    corrupted = np.stack(simulate_noise(list(data.clean), strong_mixed(1.0), 0).masks)
    worse = edge_alignment(data.images, corrupted)
    assert np.nanmean(clean) > 1.0 > np.nanmean(worse) * 0.9
    labels = np.r_[np.zeros(40), np.ones(40)]
    assert roc_auc_score(labels, -np.r_[clean, worse]) > 0.85


def test_coarseness_tells_a_few_clicks_from_a_traced_outline_whatever_the_size() -> None:
    # Per px of outline, small objects once looked finely drawn and large ones coarse: on LIDC nodules
    # the size, not the drawing, ranked the masks.
    yy, xx = np.mgrid[:128, :128]
    disks, boxes = [], []
    for r in (8, 16, 32):
        disks.append(coarseness((((yy - 64) ** 2 + (xx - 64) ** 2) <= r * r).astype(np.int64)))
        box = np.zeros((128, 128), dtype=np.int64)
        box[64 - r : 64 + r, 64 - r : 64 + r] = 1
        boxes.append(coarseness(box))
    assert max(disks) - min(disks) < 0.2
    assert all(d - b > 0.4 for d, b in zip(disks, boxes, strict=True))
    assert np.isnan(coarseness(np.zeros((8, 8), dtype=np.int64)))
