"""Pixel-level confident learning: cleanlab's ``find_label_issues(filter_by='both')``, our own code.

Northcutt et al., "Confident Learning" (JAIR 2021); mechanics as in cleanlab 2.x ``cleanlab/count.py``
(confident joint, calibration) and ``cleanlab/filter.py`` (prune by class, prune by noise rate), with
``min_examples_per_class=1`` and ``frac_noise=1``. Pixels are the samples here. The per-class thresholds
are an argument, so the T stage can estimate them over the whole flagged set or smooth them with an
EMA; with ``class_thresholds(pred_probs, labels)`` the result equals cleanlab's boolean mask exactly
(tested). Shape legend: M pixels (samples), K classes.
"""

from __future__ import annotations

import numpy as np

_FLOAT_EQ = 1e-6  # cleanlab's FLOATING_POINT_COMPARISON
_TINY = 1e-100


def class_thresholds(pred_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """t_k = mean p_k over samples labelled k, (K,); absent classes get 2 (never confident).

    pred_probs (M, K), labels (M,). Clipped below at 2e-6 as cleanlab does.
    """
    k = pred_probs.shape[1]
    out = [float(np.mean(pred_probs[labels == c, c])) if np.any(labels == c) else 2.0 for c in range(k)]
    return np.clip(np.asarray(out), 2 * _FLOAT_EQ, None)


def _round_preserving_sum(values: np.ndarray) -> np.ndarray:
    floats = np.asarray(values, dtype=float)
    ints = floats.round()
    target, total = np.sum(floats).round(), np.sum(ints).round()
    while abs(total - target) > _FLOAT_EQ:
        diff = np.round(target - total)
        step = -1 if diff < 0 else 1
        changes = min(int(abs(diff)), len(floats))
        for i in np.argsort(floats - ints)[::-step][:changes]:
            ints[i] += step
        total = np.sum(ints).round()
    return ints.astype(int)


def _round_rows(matrix: np.ndarray) -> np.ndarray:
    return np.apply_along_axis(_round_preserving_sum, 1, matrix).astype(int)


def confident_joint(pred_probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Calibrated confident joint C[given, true], (K, K) int, rows summing to the label counts."""
    k = pred_probs.shape[1]
    confident = pred_probs >= np.asarray(thresholds) - _FLOAT_EQ
    n_conf = confident.sum(1)
    guess = np.where(n_conf > 1, pred_probs.argmax(1), confident.argmax(1))
    keep = n_conf > 0
    joint = np.bincount(labels[keep] * k + guess[keep], minlength=k * k).reshape(k, k)
    np.fill_diagonal(joint, joint.diagonal().clip(min=1))
    counts = np.bincount(labels, minlength=k)
    cal = (joint.T / np.clip(joint.sum(1), _TINY, None) * counts).T
    cal = cal / np.clip(np.sum(cal), _TINY, None) * counts.sum()
    return _round_rows(cal)


def _prune_counts(joint: np.ndarray) -> np.ndarray:
    """cleanlab's ``_keep_at_least_n_per_class(joint.T, n=1, frac_noise=1)``: (K, K) [true, given]."""
    pcm = joint.T.astype(float)
    diag = np.diagonal(pcm)
    new_diag = np.maximum(diag, 1)
    per_col = np.maximum(np.count_nonzero(pcm, axis=0) - 1.0, 1.0)
    new = pcm - (new_diag - diag) / per_col
    new[new < 0] = 0
    np.fill_diagonal(new, new_diag)
    return _round_rows(new.astype(int)).astype(int)


def find_label_issues_both(pred_probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Boolean (M,) mask of label issues: pruned by class AND by noise rate, argmax != label.

    pred_probs (M, K) probabilities, labels (M,) int, thresholds (K,) per-class thresholds.
    """
    if pred_probs.ndim != 2 or labels.shape != (pred_probs.shape[0],):
        raise ValueError(
            f"need pred_probs (M, K) and labels (M,), got {pred_probs.shape} and {labels.shape}."
        )
    k = pred_probs.shape[1]
    prune = _prune_counts(confident_joint(pred_probs, labels, thresholds))
    by_class = np.zeros(labels.shape[0], dtype=bool)
    by_noise = np.zeros(labels.shape[0], dtype=bool)
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        if idx.size <= 1:
            continue
        probs_c = pred_probs[idx]
        n_issues = idx.size - prune[c, c]
        if n_issues >= 1:
            by_class[idx[np.argsort(probs_c[:, c])[:n_issues]]] = True
        for j in range(k):
            if j != c and prune[j, c] > 0:
                margin = probs_c[:, j] - probs_c[:, c]
                by_noise[idx[np.argsort(-margin)[: prune[j, c]]]] = True
    issues = by_class & by_noise
    nudged = pred_probs.copy()
    nudged[np.arange(labels.shape[0]), labels] += _FLOAT_EQ
    issues[nudged.argmax(1) == labels] = False
    return issues
