"""Table-driven checks of gtcorrect.metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gtcorrect.metrics import (
    class_dice,
    correction_metrics,
    dice,
    hd95,
    iou,
    recognition_metrics,
    segmentation_metrics,
)


def _m(rows: list[str]) -> np.ndarray:
    return np.array([[int(c) for c in r] for r in rows], dtype=np.int64)


A = _m(["1100", "1100", "0000"])  # 4 pixels
B = _m(["0110", "0110", "0000"])  # 4 pixels, 2 shared with A
EMPTY = np.zeros((3, 4), np.int64)
MC_P = _m(["1122", "1122", "0000"])
MC_T = _m(["1120", "1100", "0002"])

CASES = [
    # pred, target, K, dice, iou
    (A, A, 2, 1.0, 1.0),
    (A, B, 2, 0.5, 1 / 3),
    (EMPTY, EMPTY, 2, 1.0, 1.0),
    (A, EMPTY, 2, 0.0, 0.0),
    # class 1: 4 vs 4, all shared -> 1.0 / 1.0; class 2: |P|=4, |T|=2, shared 1 -> 2/6, 1/5
    (MC_P, MC_T, 3, (1.0 + 2 / 6) / 2, (1.0 + 1 / 5) / 2),
    # class 2 absent from both is skipped, not counted as 1.0
    (A, B, 3, 0.5, 1 / 3),
]


@pytest.mark.parametrize(("pred", "target", "k", "d", "j"), CASES)
def test_dice_iou(pred: np.ndarray, target: np.ndarray, k: int, d: float, j: float) -> None:
    assert dice(pred, target, num_classes=k) == pytest.approx(d, abs=1e-9)
    assert iou(pred, target, num_classes=k) == pytest.approx(j, abs=1e-9)


def test_class_dice_per_image_and_structure() -> None:
    # Which structure of a multi-class mask disagrees: class 1 of MC_P/MC_T agrees, class 2 shares 1 of
    # 4 + 2 pixels; a class neither map has is NaN, not 1.0 (nothing to compare).
    got = class_dice(np.stack([MC_P, A]), np.stack([MC_T, B]), 3)
    np.testing.assert_allclose(got, [[1.0, 2 / 6], [0.5, np.nan]])
    assert class_dice(np.stack([A]), np.stack([A]), 2).shape == (1, 1)
    with pytest.raises(ValueError, match="one shape"):
        class_dice(A, A, 2)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"same shape, got \(3, 4\) and \(4, 3\)"):
        dice(A, A.T)


def _square(size: int, y0: int, x0: int, side: int) -> np.ndarray:
    m = np.zeros((size, size), np.int64)
    m[y0 : y0 + side, x0 : x0 + side] = 1
    return m


@pytest.mark.parametrize(
    ("pred", "target", "expected"),
    [
        (_square(40, 10, 10, 10), _square(40, 10, 10, 10), 0.0),
        # a pure shift by 3 px: every surface point is at most 3 px away, most exactly 3
        (_square(40, 10, 13, 10), _square(40, 10, 10, 10), 3.0),
        (EMPTY, EMPTY, 0.0),
    ],
)
def test_hd95(pred: np.ndarray, target: np.ndarray, expected: float) -> None:
    assert hd95(pred, target) == pytest.approx(expected, abs=1e-6)


def test_hd95_one_empty_is_nan_and_counted() -> None:
    assert math.isnan(hd95(A, EMPTY))
    out = segmentation_metrics([A, A], [A, EMPTY], num_classes=2)
    assert out["dice"] == pytest.approx(0.5)
    assert out["iou"] == pytest.approx(0.5)
    assert out["hd95"] == pytest.approx(0.0)
    assert out["hd95_undefined"] == pytest.approx(0.5)


def test_recognition_metrics_hand_computed() -> None:
    is_noisy = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    clean_prob = np.array([0.1, 0.4, 0.9, 0.2, 0.8, 0.9, 0.95, 0.7])
    # predicted noisy (<= 0.5): 0, 1, 3 -> tp 2, fp 1, fn 1, tn 4
    out = recognition_metrics(is_noisy, clean_prob)
    assert out["accuracy"] == pytest.approx(6 / 8)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    # pairs (noisy, clean) ranked correctly by 1 - p: noisy scores .9 .6 .1, clean .8 .2 .1 .05 .3
    # wins: .9 -> 5; .6 -> 4; .1 -> 1 + 0.5 tie with .1 -> 1.5; total 10.5 of 15
    assert out["auroc"] == pytest.approx(10.5 / 15)
    assert out["estimated_noise_rate"] == pytest.approx(3 / 8)
    assert out["true_noise_rate"] == pytest.approx(3 / 8)


def test_recognition_metrics_one_class_gives_nan() -> None:
    out = recognition_metrics(np.zeros(4, bool), np.array([0.9, 0.8, 0.3, 0.7]))
    assert math.isnan(out["auroc"]) and math.isnan(out["recall"])
    assert out["precision"] == 0.0 and out["accuracy"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="is_noisy has 2 entries but clean_prob has 3"):
        recognition_metrics(np.zeros(2, bool), np.zeros(3))


def test_correction_metrics_hand_computed() -> None:
    clean = _m(["0110", "0110"])
    noisy = _m(["1111", "0110"])  # 2 wrong pixels
    corrected = _m(["0111", "0111"])  # fixes 1 error, leaves 1, breaks 1 good pixel
    out = correction_metrics(noisy, corrected, clean)
    assert out["dice_noisy"] == pytest.approx(2 * 4 / (6 + 4))
    assert out["dice_corrected"] == pytest.approx(2 * 4 / (6 + 4))
    assert out["change_precision"] == pytest.approx(1 / 2)
    assert out["change_recall"] == pytest.approx(1 / 2)
    assert out["changed_fraction"] == pytest.approx(2 / 8)
    perfect = correction_metrics([noisy, noisy], [clean, clean], [clean, clean])
    assert perfect["dice_corrected"] == 1.0 and perfect["change_precision"] == 1.0
