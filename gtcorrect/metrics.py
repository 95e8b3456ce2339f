"""Segmentation, noise-recognition and correction metrics (pure functions, numpy in, floats out).

Shape legend: H, W mask height and width; K classes (0 = background, never scored); N images.
Masks are (H, W) integer class indices. Style after MONAI ``monai/metrics/meandice.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} and {target.shape}.")
    if pred.ndim != 2:
        raise ValueError(f"masks must be (H, W), got shape {pred.shape}.")


def _per_class(pred: np.ndarray, target: np.ndarray, num_classes: int, kind: str) -> float:
    """Mean over foreground classes present in pred or target; 1.0 when no class is present at all."""
    _check_pair(pred, target)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    scores = []
    for k in range(1, num_classes):
        p, t = pred == k, target == k
        union = int(np.count_nonzero(p | t))
        if union == 0:
            continue  # absent in both: nothing to score, as MONAI's ignore_empty
        inter = int(np.count_nonzero(p & t))
        if kind == "dice":
            scores.append(2.0 * inter / (int(np.count_nonzero(p)) + int(np.count_nonzero(t))))
        else:
            scores.append(inter / union)
    return float(np.mean(scores)) if scores else 1.0


def dice(pred: np.ndarray, target: np.ndarray, *, num_classes: int = 2) -> float:
    """Dice 2|P n T| / (|P| + |T|) of (H, W) masks, mean over foreground classes; both empty -> 1.0."""
    return _per_class(pred, target, num_classes, "dice")


def iou(pred: np.ndarray, target: np.ndarray, *, num_classes: int = 2) -> float:
    """Jaccard |P n T| / |P u T| of (H, W) masks, mean over foreground classes; both empty -> 1.0."""
    return _per_class(pred, target, num_classes, "iou")


def _surface(region: np.ndarray) -> np.ndarray:
    # border_value=0 so that objects touching the image edge still have a surface there.
    return region & ~ndimage.binary_erosion(region, border_value=0)


def hd95(pred: np.ndarray, target: np.ndarray, *, num_classes: int = 2) -> float:
    """95th-percentile symmetric Hausdorff distance in pixels, mean over foreground classes.

    Per class: max of the 95th percentiles of pred-surface -> target-surface and target -> pred
    distances (as MONAI). A class absent from both masks is skipped (0.0 if all are absent); a class
    present in exactly one mask has no defined distance and makes the result ``nan``.
    """
    _check_pair(pred, target)
    values = []
    for k in range(1, num_classes):
        p, t = pred == k, target == k
        has_p, has_t = bool(p.any()), bool(t.any())
        if not has_p and not has_t:
            continue
        if has_p != has_t:
            return math.nan
        sp, st = _surface(p), _surface(t)
        d_to_t = ndimage.distance_transform_edt(~st)[sp]
        d_to_p = ndimage.distance_transform_edt(~sp)[st]
        values.append(max(float(np.percentile(d_to_t, 95)), float(np.percentile(d_to_p, 95))))
    return float(np.mean(values)) if values else 0.0


def segmentation_metrics(
    preds: Sequence[np.ndarray], targets: Sequence[np.ndarray], num_classes: int
) -> dict[str, float]:
    """Mean dice, iou and hd95 over N pairs of (H, W) masks.

    hd95 averages the images where it is defined; ``hd95_undefined`` is the fraction where it is not
    (exactly one of prediction and target empty), so an empty prediction cannot hide.
    """
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} predictions for {len(targets)} targets.")
    if not preds:
        raise ValueError("no masks to score.")
    d = [dice(p, t, num_classes=num_classes) for p, t in zip(preds, targets, strict=True)]
    j = [iou(p, t, num_classes=num_classes) for p, t in zip(preds, targets, strict=True)]
    h = np.array([hd95(p, t, num_classes=num_classes) for p, t in zip(preds, targets, strict=True)])
    defined = ~np.isnan(h)
    return {
        "dice": float(np.mean(d)),
        "iou": float(np.mean(j)),
        "hd95": float(h[defined].mean()) if defined.any() else math.nan,
        "hd95_undefined": float(1.0 - defined.mean()),
    }


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def recognition_metrics(
    is_noisy: np.ndarray, clean_prob: np.ndarray, *, tau: float = 0.5
) -> dict[str, float]:
    """Image-level noise recognition, noisy = positive. Inputs are (N,) arrays.

    An image is predicted noisy when clean_prob <= tau (the clean set is clean_prob > tau, as in the
    G stage). Undefined ratios (no positives, no predicted positives) are ``nan``; auroc uses the score
    1 - clean_prob and is ``nan`` when only one class is present.
    """
    truth = np.asarray(is_noisy, dtype=bool).ravel()
    prob = np.asarray(clean_prob, dtype=np.float64).ravel()
    if truth.shape != prob.shape:
        raise ValueError(f"is_noisy has {truth.size} entries but clean_prob has {prob.size}.")
    if truth.size == 0:
        raise ValueError("no samples to score.")
    pred = prob <= tau
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    if math.isnan(precision) or math.isnan(recall):
        f1 = math.nan
    else:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    auroc = float(roc_auc_score(truth, 1.0 - prob)) if 0 < truth.sum() < truth.size else math.nan
    return {
        "accuracy": float(np.mean(pred == truth)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": auroc,
        "estimated_noise_rate": float(pred.mean()),
        "true_noise_rate": float(truth.mean()),
    }


def _as_list(masks: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        return [masks]
    return [np.asarray(m) for m in masks]


def correction_metrics(
    noisy: np.ndarray | Sequence[np.ndarray],
    corrected: np.ndarray | Sequence[np.ndarray],
    clean: np.ndarray | Sequence[np.ndarray],
    *,
    num_classes: int = 2,
) -> dict[str, float]:
    """How much label correction helped on flagged images: one (H, W) mask or N of each.

    dice_noisy / dice_corrected: mean Dice against the clean masks. change_precision: of the pixels
    the correction changed, the fraction that were wrong in the noisy mask; change_recall: of the
    wrong pixels, the fraction changed. Pixel counts are pooled over all images.
    """
    n_list, c_list, t_list = _as_list(noisy), _as_list(corrected), _as_list(clean)
    if not (len(n_list) == len(c_list) == len(t_list)):
        raise ValueError(f"got {len(n_list)} noisy, {len(c_list)} corrected and {len(t_list)} clean masks.")
    if not n_list:
        raise ValueError("no masks to score.")
    changed_err = changed = errors = 0
    for n, c, t in zip(n_list, c_list, t_list, strict=True):
        _check_pair(n, t)
        _check_pair(c, t)
        ch, err = c != n, n != t
        changed_err += int(np.count_nonzero(ch & err))
        changed += int(np.count_nonzero(ch))
        errors += int(np.count_nonzero(err))
    return {
        "dice_noisy": float(
            np.mean([dice(n, t, num_classes=num_classes) for n, t in zip(n_list, t_list, strict=True)])
        ),
        "dice_corrected": float(
            np.mean([dice(c, t, num_classes=num_classes) for c, t in zip(c_list, t_list, strict=True)])
        ),
        "change_precision": _ratio(changed_err, changed),
        "change_recall": _ratio(changed_err, errors),
        "changed_fraction": changed / sum(m.size for m in n_list),
    }


def class_dice(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-image, per-foreground-class Dice (N, num_classes - 1) of (N, H, W) label maps: column k - 1 is
    class k's; NaN where neither map has the class (nothing to compare)."""
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(
            f"pred and target must be (N, H, W) of one shape, got {pred.shape} and {target.shape}."
        )
    out = np.full((pred.shape[0], max(num_classes - 1, 0)), np.nan)
    for k in range(1, num_classes):
        p, t = pred == k, target == k
        denom = p.sum((1, 2)) + t.sum((1, 2))
        out[:, k - 1] = np.where(denom > 0, 2.0 * (p & t).sum((1, 2)) / np.maximum(denom, 1), np.nan)
    return out


def foreground_dice(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image Dice (N,) of (N, H, W) label maps with every foreground class pooled (label > 0);
    1.0 where both are empty. Vectorised, for the engine's own checks on whole sets."""
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(
            f"pred and target must be (N, H, W) of one shape, got {pred.shape} and {target.shape}."
        )
    p, t = pred > 0, target > 0
    inter = (p & t).sum((1, 2))
    denom = p.sum((1, 2)) + t.sum((1, 2))
    return np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), 1.0)
