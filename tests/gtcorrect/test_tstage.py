import math
import warnings

import numpy as np
import pytest
import torch
from cleanlab.filter import find_label_issues
from torch import nn

from gtcorrect.tstage import (
    EarlyLearningDetector,
    class_thresholds,
    confident_flags,
    consistency_loss,
    ema_update,
    hard_correction,
    noisy_input,
    sigmoid_rampup,
    soft_correction,
)


def _random_probs(seed: int, n: int = 3, k: int = 2, s: int = 12):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k, s, s)) * rng.uniform(0.5, 3.0)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, k, size=(n, s, s))
    return probs, labels


@pytest.mark.parametrize(("seed", "k"), [(0, 2), (1, 2), (2, 3), (3, 3), (4, 2), (5, 4)])
def test_pixel_flags_equal_cleanlab_filter_by_both(seed: int, k: int) -> None:
    probs, labels = _random_probs(seed, k=k)
    flags = confident_flags(probs, labels, class_thresholds(probs, labels))
    flat_probs = np.moveaxis(probs, 1, -1).reshape(-1, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = find_label_issues(labels.reshape(-1), flat_probs, filter_by="both")
    assert flags.shape == labels.shape
    assert flags.sum() > 0
    np.testing.assert_array_equal(flags.reshape(-1), expected)


def test_floor_and_argmax_rule() -> None:
    probs, labels = _random_probs(7)
    thresholds = class_thresholds(probs, labels)
    flags = confident_flags(probs, labels, thresholds)
    floored = confident_flags(probs, labels, thresholds, confidence_floor=0.9)
    assert not np.any(flags & (probs.argmax(1) == labels))
    assert np.all(floored <= flags) and floored.sum() < flags.sum()
    assert np.all(probs.max(1)[floored] >= 0.9)


def test_thresholds_are_class_means_with_optional_ema() -> None:
    probs, labels = _random_probs(8)
    current = class_thresholds(probs, labels)
    assert np.isclose(current[1], probs[:, 1][labels == 1].mean())
    smoothed = class_thresholds(probs, labels, previous=np.array([0.9, 0.9]), ema=0.5)
    assert np.allclose(smoothed, 0.5 * 0.9 + 0.5 * current)


def test_hard_and_soft_correction() -> None:
    probs, labels = _random_probs(9)
    flags = confident_flags(probs, labels, class_thresholds(probs, labels))
    hard = hard_correction(probs, labels, flags)
    assert hard.dtype == np.int64
    assert np.array_equal(hard[flags], probs.argmax(1)[flags]) and np.array_equal(
        hard[~flags], labels[~flags]
    )
    soft = soft_correction(probs, labels, flags)
    assert soft.shape == probs.shape and np.allclose(soft.sum(1), 1.0, atol=1e-6)
    onehot = np.moveaxis(np.eye(2)[labels], -1, 1)
    assert np.allclose(np.moveaxis(soft, 1, -1)[~flags], np.moveaxis(onehot, 1, -1)[~flags])
    # A more confident teacher moves a flagged pixel further from its label.
    moved = np.abs(soft - onehot).sum(1)[flags]
    assert np.corrcoef(moved, probs.max(1)[flags])[0, 1] > 0.5


@pytest.mark.parametrize(("a", "c"), [(0.9, 3.0), (0.7, 5.0), (0.85, 8.0)])
def test_detector_finds_the_knee_of_saturating_curves(a: float, c: float) -> None:
    rng = np.random.default_rng(0)
    knee = 1 + c * math.log(10)  # where a/c exp(-t/c) falls to 10 % of its value at t = 1
    detector = EarlyLearningDetector("curve", slope_frac=0.1, fixed_epochs=50)
    for t in range(1, 60):
        if detector.update(a * (1 - math.exp(-t / c)) + rng.normal(0, 0.005)):
            break
    assert detector.switch_epoch is not None and not detector.fit_failed
    assert abs(detector.switch_epoch - knee) <= 2.5


def test_detector_fixed_none_fallback_and_state() -> None:
    fixed = EarlyLearningDetector("fixed", fixed_epochs=3)
    assert [fixed.update(0.5) for _ in range(4)] == [False, False, True, True] and fixed.switch_epoch == 3
    assert EarlyLearningDetector("none").switched
    broken = EarlyLearningDetector("curve", fixed_epochs=4)
    for _ in range(4):
        broken.update(float("nan"))
    assert broken.fit_failed and broken.switch_epoch == 4
    again = EarlyLearningDetector("curve")
    again.load_state_dict(broken.state_dict())
    assert again.state_dict() == broken.state_dict()
    with pytest.raises(ValueError, match="'adele'"):
        EarlyLearningDetector("adele")


def test_ema_rampup_consistency_noise() -> None:
    teacher, student = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(0.0)
    ema_update(teacher, student, decay=0.99, step=1000)
    assert torch.allclose(teacher.weight, torch.full_like(teacher.weight, 0.99))
    ema_update(teacher, student, decay=0.99, step=0)  # warm start: alpha = 0 copies the student
    assert torch.equal(teacher.weight, student.weight)
    assert sigmoid_rampup(5, 5, 0.1) == 0.1 and math.isclose(sigmoid_rampup(0, 5, 0.1), 0.1 * math.exp(-5))
    logits = torch.randn(2, 2, 4, 4)
    assert consistency_loss(logits, logits) == 0.0
    x = torch.zeros(2, 1, 8, 8)
    noisy = noisy_input(x, std=1.0, clip=0.2, generator=torch.Generator().manual_seed(0))
    assert noisy.abs().max() <= 0.2 + 1e-7 and noisy.abs().max() > 0.1
