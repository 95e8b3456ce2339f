"""Data passed into and out of ``gtcorrect.fit``.

Shape legend: N images, C image channels, K classes (K = 2 for binary masks; 0 = background),
S the square training size (``TrainConfig.image_size``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LabelMap:
    """Class index -> name. Index 0 is the background."""

    names: tuple[str, ...] = ("background", "foreground")

    def __post_init__(self) -> None:
        if len(self.names) < 2:
            raise ValueError(f"a label map needs at least 2 classes (background + one), got {self.names}.")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict[str, str]:
        return {str(i): n for i, n in enumerate(self.names)}

    @classmethod
    def from_dict(cls, mapping: dict[str | int, str]) -> LabelMap:
        keys = sorted(int(k) for k in mapping)
        if keys != list(range(len(keys))):
            raise ValueError(f"label map indices must be 0..K-1 without gaps, got {keys}.")
        return cls(tuple(mapping[k] if k in mapping else mapping[str(k)] for k in keys))


@dataclass(frozen=True)
class ReaderMasks:
    """Several readers' masks of some training images, learnt from in place of the given mask (which
    stays what the job judges, e.g. the readers' consensus): every epoch, each of those images is learnt
    from one of its readers' masks, drawn with probability proportional to the mask's weight (the
    reader's reliability), so training follows every reader's outline in proportion to their weight.

    masks: (M, S, S) uint8 class indices; owner: (M,) the training index each mask belongs to;
    weights: (M,) positive.
    """

    masks: np.ndarray
    owner: np.ndarray
    weights: np.ndarray

    @classmethod
    def of(cls, stacks: list[np.ndarray], weights: list[list[float]]) -> ReaderMasks:
        """From every training image's readers' masks (R_i, S, S) and their weights (R_i,); an image with
        fewer than two masks is learnt from its given mask (which is then its one reader's, or none's)."""
        size = stacks[0].shape[1:] if stacks else (0, 0)
        keep = [i for i, s in enumerate(stacks) if len(s) >= 2]
        if not keep:
            return cls(np.zeros((0, *size), np.uint8), np.zeros(0, np.int64), np.zeros(0))
        return cls(
            np.concatenate([stacks[i] for i in keep]).astype(np.uint8),
            np.concatenate([np.full(len(stacks[i]), i, dtype=np.int64) for i in keep]),
            np.concatenate([np.asarray(weights[i], dtype=np.float64) for i in keep]),
        )

    def subset(self, idx: np.ndarray) -> ReaderMasks:
        """The masks of training images ``idx``, their owners renumbered to their place in ``idx``."""
        n = max(int(self.owner.max(initial=-1)), int(np.max(idx, initial=-1))) + 1
        place = np.full(n, -1, dtype=np.int64)
        place[idx] = np.arange(len(idx))
        keep = place[self.owner] >= 0
        return ReaderMasks(self.masks[keep], place[self.owner[keep]], self.weights[keep])

    def check(self, n: int, size: tuple[int, ...], num_classes: int) -> None:
        """``ValueError`` naming the problem unless these masks fit N training images of ``size``."""
        m = self.masks.shape[0]
        if self.masks.shape[1:] != size or self.owner.shape != (m,) or self.weights.shape != (m,):
            raise ValueError(
                f"reader masks must be (M, {', '.join(map(str, size))}) with M owners and M weights, got "
                f"{self.masks.shape}, {self.owner.shape} and {self.weights.shape}."
            )
        if m and (self.owner.min() < 0 or self.owner.max() >= n):
            raise ValueError(f"reader mask owners must be training indices 0..{n - 1}.")
        if not np.all(np.isfinite(self.weights) & (self.weights > 0)):
            raise ValueError("reader weights must be finite and above 0.")
        if m and int(self.masks.max()) >= num_classes:
            raise ValueError(f"reader mask values lie outside the label map 0..{num_classes - 1}.")


@dataclass
class TrainingData:
    """Training (and optional validation) arrays at the training size.

    images: (N, C, S, S) float32, normalised; masks: (N, S, S) int64 class indices (the given,
    possibly noisy masks); ids: N sample identifiers (file stems or database ids).
    """

    images: np.ndarray
    masks: np.ndarray
    ids: list[str]
    label_map: LabelMap = field(default_factory=LabelMap)
    val_images: np.ndarray | None = None
    val_masks: np.ndarray | None = None
    original_sizes: list[tuple[int, int]] | None = None  # (height, width) per training image
    # Who drew each mask (N,): with two or more annotators, a biased one is looked for (gtcorrect.bias).
    annotators: list[str] | None = None
    # Several readers' masks to learn from instead of ``masks`` (which stay what is judged); see ReaderMasks.
    readers: ReaderMasks | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, S, S), got shape {self.images.shape}.")
        n = self.images.shape[0]
        if n == 0:
            raise ValueError("training data is empty: got 0 images.")
        if self.masks.shape != (n, *self.images.shape[2:]):
            raise ValueError(
                f"masks must be (N, S, S) = {(n, *self.images.shape[2:])}, got {self.masks.shape}."
            )
        if len(self.ids) != n:
            raise ValueError(f"got {len(self.ids)} ids for {n} images.")
        if self.annotators is not None and len(self.annotators) != n:
            raise ValueError(f"got {len(self.annotators)} annotators for {n} images.")
        if self.readers is not None:
            self.readers.check(n, self.masks.shape[1:], self.label_map.num_classes)
        bad = np.unique(self.masks[(self.masks < 0) | (self.masks >= self.label_map.num_classes)])
        if bad.size:
            raise ValueError(
                f"mask values {bad.tolist()} lie outside the label map 0..{self.label_map.num_classes - 1}."
            )


@dataclass(frozen=True)
class Progress:
    """What callbacks receive: one event per epoch, then one "assessing" event when training ends."""

    phase: str  # "warmup", "g_round", "t_early", "t_correct", "train"; then "assessing"
    epoch: int  # global epoch counter, 1-based, continues across phases and resumes
    total_epochs: int
    round: int | None = None
    losses: dict[str, float] = field(default_factory=dict)
    estimated_noise_rate: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GmmRound:
    """One GMM fit of the G stage (user-visible, not debug output)."""

    round: int  # 0 = after warm-up
    means: tuple[float, float]  # (clean, noisy) component means on min-max normalised losses
    variances: tuple[float, float]
    weights: tuple[float, float]
    separation: float  # S = (mu_noisy - mu_clean) / sqrt(var_clean + var_noisy)
    hist_counts: tuple[int, ...]
    hist_edges: tuple[float, ...]
    n_flagged: int
    n_changed: int  # images that changed side since the previous round
    # False: the fit failed a guard of ``g.detector="loss"`` (one side too small, or nearly every mask
    # flagged); the masks with the highest scores were flagged instead, as many as its share said.
    applied: bool = True
    score: str = "normalised per-sample loss"  # what the histogram's axis is
    distribution: str = "normal"  # the components' family: "normal" (the loss GMM) or "beta" (the detector)


@dataclass
class FitResult:
    """Everything ``fit`` returns. Per-sample arrays are aligned with ``TrainingData.ids``.

    corrected: sample index -> proposed corrected mask at the training size, (S, S) int64 for hard
    correction, or (K, S, S) float32 soft targets for soft correction. Only flagged images that the
    correction gate (``gtcorrect.quality``) let through appear; the others are in ``withheld``.
    model: a ``gtcorrect.inference.ModelBundle`` (kept as Any here to avoid an import cycle).
    """

    ids: list[str]
    clean_prob: np.ndarray  # (N,) float
    flagged: np.ndarray  # (N,) bool
    round_decided: np.ndarray  # (N,) int
    sample_loss: np.ndarray  # (N,) float, the final score: the ranking (higher: more doubtful)
    rounds: list[GmmRound]
    corrected: dict[int, np.ndarray]
    model: Any
    history: list[Progress]
    metrics: dict[str, float] = field(default_factory=dict)
    held_out: np.ndarray | None = None  # (N,) bool: held back for validation, never trained on
    withheld: dict[int, np.ndarray] = field(default_factory=dict)  # corrections the gate did not propose
    quality: Any = None  # a ``gtcorrect.quality.Quality``: the job's judgement of itself
    predicted: np.ndarray | None = None  # (N, S, S) uint8: the kept network's prediction on every image
    decided_by: list[str] | None = None  # (N,) the evidence that raised each mask's doubt most
    # (N, K - 1): each foreground class's Dice between the given mask and ``predicted`` (NaN where neither
    # has the class): which structure of a multi-class mask looks wrong.
    class_dice: np.ndarray | None = None
    # The annotator report (``gtcorrect.annotators.AnnotatorStats`` as dicts, offsets in original pixels);
    # empty when the annotators are not known.
    annotator_report: list[dict[str, Any]] = field(default_factory=list)
    # (N,) why a flagged mask's correction was not proposed (the gate's first failed check), else None.
    withheld_because: list[str | None] | None = None


ProgressCallback = Callable[[Progress], None]
StopCheck = Callable[[], bool]


def json_safe(value: Any) -> Any:
    """Plain JSON: numpy scalars become Python numbers, NaN and infinities None (JSON and PostgreSQL
    have neither), tuples lists, keys strings."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
