"""One evidence pass: everything a job measures about one mask, in one table.

Every verdict of a job (each G-stage split, the final verdict, the self-test, the annotator check) reads
the same columns, measured by this module and nowhere else. A column is one number per mask, named
with its source:

- ``net.excess``: disagreement with the network beyond what its own uncertainty explains
  (``gtcorrect.losses.excess_disagreement``: about 1 per confidently wrong pixel, over object size);
- ``net.disagreement``: 1 - Dice of the mask with the network's prediction, mean over the foreground
  classes either has; ``net.worst_class``: the same for the class where they disagree most (which
  structure looks wrong; ``per_class`` keeps every class's);
- ``shape.area``: log of the mask's foreground area over the predicted one (+: drawn too large);
- ``shape.offset``: mean signed distance of the mask's outline from the predicted one, px at 128
  (+: outside);
- ``edge.alignment``: how well the outline follows the image's edges (``gtcorrect.boundary``), no network;
- ``shape.coarseness``: log of the polygon vertices needed (1 px tolerance at 128) over the square root
  of the outline's length, the mask alone: a coarse outline of a few clicks needs few. A traced smooth
  outline needs vertices in proportion to that root, so the measure does not change with the object's
  size (per px of outline, small objects looked finely drawn and large ones coarse: on LIDC nodules the
  size, not the drawing, ranked the masks).

The network columns use the probabilities averaged over flipped views of the image (test-time
augmentation) when the caller asks for several views. Measured on Kvasir-SEG, strong mixed noise,
alpha 0.5: the network columns rank the wrong masks with AUROC 0.86-0.87, the edges 0.87, coarseness
singles out coarse polygons (0.97 against correct masks); combined by ``gtcorrect.verdict`` 0.97
(BENCHMARKS.md, "Recognition that transfers"). Shape legend: M masks, K classes, S size, C channels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import measure

from gtcorrect.boundary import REFERENCE_SIZE, edge_strength, mask_alignment, outline

NETWORK_COLUMNS = ("net.excess", "net.disagreement", "net.worst_class", "shape.area", "shape.offset")
STATIC_COLUMNS = ("edge.alignment", "shape.coarseness")
COLUMNS = NETWORK_COLUMNS + STATIC_COLUMNS
_COARSE_TOLERANCE = 1.0  # px at 128


@dataclass(frozen=True)
class EvidenceTable:
    """One row per mask: ``columns`` name -> (M,) float (NaN where undefined, e.g. the outline offset of
    an empty mask) and ``per_class`` (M, K - 1), each foreground class's disagreement (NaN where neither
    the mask nor the prediction has that class)."""

    columns: dict[str, np.ndarray]
    per_class: np.ndarray

    def __len__(self) -> int:
        return int(self.per_class.shape[0])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def take(self, idx: np.ndarray) -> EvidenceTable:
        return EvidenceTable({k: v[idx] for k, v in self.columns.items()}, self.per_class[idx])

    @staticmethod
    def concat(tables: Iterable[EvidenceTable]) -> EvidenceTable:
        parts = list(tables)
        names = parts[0].columns
        return EvidenceTable(
            {k: np.concatenate([t.columns[k] for t in parts]) for k in names},
            np.concatenate([t.per_class for t in parts]),
        )


def _scale(shape: tuple[int, ...]) -> float:
    return float(np.sqrt(shape[-2] * shape[-1])) / REFERENCE_SIZE


def excess(probs: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(M,) ``losses.excess_disagreement`` in numpy: probs (M, K, S, S), masks (M, S, S)."""
    p = 1.0 - probs[:, 0].astype(np.float64)
    y = (masks > 0).astype(np.float64)
    out = (np.abs(y - p) - 2.0 * p * (1.0 - p)).sum((1, 2))
    return np.asarray(out / (y.sum((1, 2)) + p.sum((1, 2)) + 1.0))


def class_disagreement(predicted: np.ndarray, masks: np.ndarray, k: int) -> np.ndarray:
    """(M, K - 1): 1 - Dice of each foreground class between prediction and mask; NaN where neither has it."""
    out = np.full((masks.shape[0], max(k - 1, 1)), np.nan)
    for c in range(1, k):
        p, m = predicted == c, masks == c
        denom = (p.sum((1, 2)) + m.sum((1, 2))).astype(np.float64)
        inter = (p & m).sum((1, 2)).astype(np.float64)
        out[:, c - 1] = np.where(denom > 0, 1.0 - 2.0 * inter / np.maximum(denom, 1.0), np.nan)
    return out


def outline_offset(mask: np.ndarray, predicted: np.ndarray) -> float:
    """Mean signed distance (px) of the outline of ``mask`` (S, S) from that of ``predicted``, over both
    sides of the mask's boundary: + where the mask's outline lies outside the prediction (wider); NaN
    when either is empty or full."""
    g, p = np.asarray(mask) > 0, np.asarray(predicted) > 0
    if not g.any() or g.all() or not p.any() or p.all():
        return float("nan")
    # Both distance transforms on the box around the two masks and a ring of background pixels: the same
    # distances (the nearest background pixel of the prediction is never beyond that ring) at less cost.
    rows, cols = np.flatnonzero((g | p).any(1)), np.flatnonzero((g | p).any(0))
    box = (
        slice(max(rows[0] - 1, 0), min(rows[-1] + 2, g.shape[0])),
        slice(max(cols[0] - 1, 0), min(cols[-1] + 2, g.shape[1])),
    )
    g, p = g[box], p[box]
    signed = np.where(p, 0.5 - ndimage.distance_transform_edt(p), ndimage.distance_transform_edt(~p) - 0.5)
    return float(signed[outline(g)].mean())


def coarseness(mask: np.ndarray) -> float:
    """log(polygon vertices / sum over outlines of sqrt(length, px at 128)) over every class region of
    ``mask`` (S, S); NaN without an outline. A hasty polygon of a few clicks needs few vertices; a traced
    outline many: at a fixed tolerance, a smooth closed outline of length L needs about sqrt(L) of them
    (a circle of radius r: pi / arccos(1 - t / r) ~ pi sqrt(r / 2t)), whatever the object's size."""
    scale = _scale(mask.shape)
    tol = _COARSE_TOLERANCE * scale
    vertices, roots = 0, 0.0
    for c in np.unique(mask[mask > 0]):
        for contour in measure.find_contours(np.pad(mask == c, 1).astype(np.float32), 0.5):
            if len(contour) < 3:
                continue
            vertices += len(measure.approximate_polygon(contour, tol))
            roots += float(np.sqrt(np.hypot(*np.diff(contour, axis=0).T).sum() / scale))
    return float(np.log(vertices / roots)) if roots > 0 else float("nan")


def class_argmax(probs: np.ndarray) -> np.ndarray:
    """``probs.argmax(1)`` of (M, K, S, S), the first class on ties, one comparison per class (numpy's
    argmax over a middle axis is several times slower)."""
    best, out = probs[:, 0], np.zeros((probs.shape[0], *probs.shape[2:]), dtype=np.int64)
    for c in range(1, probs.shape[1]):
        higher = probs[:, c] > best
        out[higher] = c
        best = np.where(higher, probs[:, c], best)
    return out


def network_columns(probs: np.ndarray, masks: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The network's columns of masks (M, S, S) under probabilities (M, K, S, S), and ``per_class``."""
    k = probs.shape[1]
    predicted = class_argmax(probs)
    per_class = class_disagreement(predicted, masks, k)
    some = np.isfinite(per_class).any(1)
    filled = np.where(np.isfinite(per_class), per_class, 0.0)
    counted = np.maximum(np.isfinite(per_class).sum(1), 1)
    area_m = (masks > 0).sum((1, 2)).astype(np.float64)
    area_p = (predicted > 0).sum((1, 2)).astype(np.float64)
    scale = _scale(masks.shape)
    columns = {
        "net.excess": excess(probs, masks),
        "net.disagreement": np.where(some, filled.sum(1) / counted, 0.0),
        "net.worst_class": np.where(some, filled.max(1), 0.0),
        "shape.area": np.log((area_m + 1.0) / (area_p + 1.0)),
        "shape.offset": np.array([outline_offset(m, p) for m, p in zip(masks, predicted, strict=True)])
        / scale,
    }
    return columns, per_class


def static_columns(edges: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """The columns that need no network: edge maps (M, S, S) of the masks' images and masks (M, S, S)."""
    return {
        "edge.alignment": np.array([mask_alignment(e, m) for e, m in zip(edges, masks, strict=True)]),
        "shape.coarseness": np.array([coarseness(m) for m in masks]),
    }


def edge_maps(images: np.ndarray) -> np.ndarray:
    """(M, S, S) edge strength of images (M, C, S, S), computed once per image and shared by its masks."""
    return np.stack([edge_strength(img) for img in images]) if len(images) else np.zeros((0, 0, 0))


def measure_masks(
    probs: np.ndarray, masks: np.ndarray, edges: np.ndarray, static: dict[str, np.ndarray] | None = None
) -> EvidenceTable:
    """Every column of masks (M, S, S) under probabilities (M, K, S, S) and their images' edge maps
    (M, S, S); ``static`` reuses columns measured before (they do not change with the network)."""
    columns, per_class = network_columns(probs, masks)
    columns.update(static if static is not None else static_columns(edges, masks))
    return EvidenceTable(columns, per_class)
