"""T stage: mean teacher, confident correcting of flagged masks, early-learning switch.

Mean teacher: Tarvainen & Valpola 2017; pixel confident learning on teacher probabilities as in MTCL
(Xu et al., MICCAI 2022); early-learning switch: ADELE (Liu et al., CVPR 2022). Shape legend:
N images, K classes, H, W spatial.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy.optimize import OptimizeWarning, curve_fit
from torch import nn

from gtcorrect.confident import class_thresholds as _pixel_thresholds
from gtcorrect.confident import find_label_issues_both


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: int) -> None:
    """teacher <- a teacher + (1 - a) student, a = min(1 - 1/(step + 1), decay) (MT's warm start)."""
    alpha = min(1.0 - 1.0 / (step + 1), decay)
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
    for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
        tb.copy_(sb)


def sigmoid_rampup(epoch: float, rampup_epochs: int, lambda_max: float) -> float:
    """lambda(t) = lambda_max exp(-5 (1 - t/T)^2) for t < T, else lambda_max (Laine & Aila 2017)."""
    if rampup_epochs <= 0:
        return lambda_max
    phase = 1.0 - min(max(epoch, 0.0), rampup_epochs) / rampup_epochs
    return lambda_max * math.exp(-5.0 * phase * phase)


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """MSE between student and teacher softmax, (B, K, H, W) each -> scalar."""
    return torch.mean((torch.softmax(student_logits, 1) - torch.softmax(teacher_logits.detach(), 1)) ** 2)


def noisy_input(x: torch.Tensor, std: float, clip: float, generator: torch.Generator) -> torch.Tensor:
    """x + clip(N(0, std^2), -clip, clip), noise drawn on the CPU generator for exact replay."""
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32) * std
    return x + noise.clamp(-clip, clip).to(device=x.device, dtype=x.dtype)


def class_thresholds(
    probs: np.ndarray, labels: np.ndarray, previous: np.ndarray | None = None, ema: float = 0.0
) -> np.ndarray:
    """Per-class thresholds (K,): mean teacher prob of class k over pixels labelled k.

    probs (N, K, H, W), labels (N, H, W), estimated over all given images (the whole flagged set).
    With ``previous`` and ``ema`` > 0: ema * previous + (1 - ema) * current.
    """
    k = probs.shape[1]
    current = _pixel_thresholds(np.moveaxis(probs, 1, -1).reshape(-1, k), labels.reshape(-1))
    if previous is None or ema <= 0.0:
        return current
    return ema * np.asarray(previous) + (1.0 - ema) * current


def confident_flags(
    probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray, confidence_floor: float = 0.0
) -> np.ndarray:
    """Pixels whose label looks wrong, (N, H, W) bool.

    probs (N, K, H, W) teacher probabilities, labels (N, H, W) int. Pixels are the samples of
    cleanlab's ``filter_by='both'`` (see ``gtcorrect.confident``); a pixel whose argmax equals its
    label is never flagged; with ``confidence_floor`` > 0 the teacher's max probability must reach it.
    """
    if probs.ndim != 4 or labels.shape != (probs.shape[0], *probs.shape[2:]):
        raise ValueError(f"need probs (N, K, H, W) and labels (N, H, W), got {probs.shape}, {labels.shape}.")
    k = probs.shape[1]
    flat = np.moveaxis(probs, 1, -1).reshape(-1, k)
    flags = find_label_issues_both(flat, labels.reshape(-1).astype(np.int64), thresholds)
    if confidence_floor > 0.0:
        flags &= flat.max(1) >= confidence_floor
    return flags.reshape(labels.shape)


def hard_correction(probs: np.ndarray, labels: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Flagged pixels take the teacher's argmax; (N, H, W) int64."""
    return np.where(flags, probs.argmax(1), labels).astype(np.int64)


def soft_correction(probs: np.ndarray, labels: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Soft targets (N, K, H, W) float32: one-hot label, and on flagged pixels w p + (1 - w) one-hot.

    w = 1 - H(p) / log K (normalised entropy of the teacher), so an unsure teacher barely moves the
    label while a confident one replaces it.
    """
    k = probs.shape[1]
    onehot = np.moveaxis(np.eye(k, dtype=np.float32)[labels], -1, 1)
    p = np.clip(probs, 1e-8, 1.0)
    w = 1.0 - (-(p * np.log(p)).sum(1) / math.log(k))
    w = np.where(flags, np.clip(w, 0.0, 1.0), 0.0)[:, None]
    return (w * probs + (1.0 - w) * onehot).astype(np.float32)


def _saturating(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a * (1.0 - np.exp(-(t**b) / c))


def _slope(t: float, a: float, b: float, c: float) -> float:
    return float(a * math.exp(-(t**b) / c) * b * t ** (b - 1.0) / c)


class EarlyLearningDetector:
    """Decides when the early-learning phase ends (ADELE's rule, Liu et al. CVPR 2022).

    Feed the per-epoch training Dice of the flagged images against their given masks with ``update``.
    mode "curve": fit f(t) = a (1 - exp(-t^b / c)) (t = 1..n) and switch once f'(n) < slope_frac f'(1);
    needs 3 points; if the fit fails, fall back to the fixed count. mode "fixed": switch after
    ``fixed_epochs`` updates. mode "none": switched from the start.
    """

    def __init__(self, mode: str = "curve", slope_frac: float = 0.1, fixed_epochs: int = 5) -> None:
        if mode not in ("curve", "fixed", "none"):
            raise ValueError(f"early-learning mode must be curve, fixed or none, got {mode!r}.")
        self.mode, self.slope_frac, self.fixed_epochs = mode, slope_frac, fixed_epochs
        self.values: list[float] = []
        self.switch_epoch: int | None = 0 if mode == "none" else None
        self.fit_failed = False

    @property
    def switched(self) -> bool:
        return self.switch_epoch is not None

    def update(self, dice: float) -> bool:
        """Record one epoch's Dice; return True if the phase switches at (or before) this epoch."""
        self.values.append(float(dice))
        n = len(self.values)
        if self.switched:
            return True
        if self.mode == "fixed" or (self.mode == "curve" and self.fit_failed):
            if n >= self.fixed_epochs:
                self.switch_epoch = n
        elif n >= 3 and self._knee_passed():
            self.switch_epoch = n
        return self.switched

    def _knee_passed(self) -> bool:
        t = np.arange(1, len(self.values) + 1, dtype=np.float64)
        y = np.asarray(self.values)
        try:
            with warnings.catch_warnings():
                # Early curves are short: an inestimable covariance is expected; only the fit is used.
                warnings.simplefilter("ignore", OptimizeWarning)
                params, _ = curve_fit(
                    _saturating,
                    t,
                    y,
                    p0=(max(float(y.max()), 1e-3), 1.0, 1.0),
                    bounds=([0.0, 0.1, 1e-3], [2.0, 5.0, 1e4]),
                    maxfev=5000,
                )
        except (RuntimeError, ValueError):
            self.fit_failed = True
            return len(self.values) >= self.fixed_epochs
        a, b, c = (float(v) for v in params)
        first, now = _slope(1.0, a, b, c), _slope(float(t[-1]), a, b, c)
        if not (math.isfinite(first) and math.isfinite(now)) or first <= 0:
            return False
        return now < self.slope_frac * first

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "switch_epoch": self.switch_epoch, "fit_failed": self.fit_failed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = [float(v) for v in state["values"]]
        self.switch_epoch = None if state["switch_epoch"] is None else int(state["switch_epoch"])
        self.fit_failed = bool(state["fit_failed"])
