"""Image evidence about a mask that does not come from the network: does its outline follow the image's
edges?

A careful annotator draws along the object's edge; a dilated, eroded, shifted or coarsely simplified
mask puts its outline beside it. ``edge_alignment`` measures this as the mean edge strength (Gaussian-
smoothed gradient magnitude, summed over channels) on the outline (within 1 px) over the mean in a band
of ``reach`` px around it: above 1 when the outline lies on the strongest edges near it. It needs no
training, so it does not share the network's blind spots (objects much larger or smaller than usual,
where the network is wrong and the given mask right). It only helps where objects have visible edges:
on Kvasir-SEG it ranks strong mixed noise with AUROC 0.84-0.87, on BU-BIL's faint cell outlines 0.61
(``python -m bench.edges``), so a run measures how well it separates its own self-test copies before using it
(``gtcorrect.quality``).
Also here: how well the alignment tells corrupted copies from their originals (``edge_auroc``, the
self-test's check that edges are evidence on this data), whether a split's flagged masks follow the
edges less than the rest (``low_alignment_auroc``), and the joint mixture over the network's score and
the alignment (``fit_joint``) that ``gtcorrect.quality`` uses for the final split.
Lengths are pixels at 128 px and scale with the image side. Shape legend: N images, C channels, S size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture

REFERENCE_SIZE = 128
SIGMA = 1.0  # Gaussian smoothing of the image before the gradient, px at 128
REACH = 10.0  # half-width of the band the outline is compared with, px at 128


def _scale(shape: tuple[int, ...]) -> float:
    return float(np.sqrt(shape[-2] * shape[-1])) / REFERENCE_SIZE


def edge_strength(image: np.ndarray) -> np.ndarray:
    """(S, S) gradient magnitude of a (C, S, S) image, smoothed at ``SIGMA`` (scaled)."""
    sigma = SIGMA * _scale(image.shape)
    out = np.zeros(image.shape[-2:], dtype=np.float64)
    for channel in np.asarray(image, dtype=np.float64):
        smooth = ndimage.gaussian_filter(channel, sigma)
        out += np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
    return out


def outline(mask: np.ndarray) -> np.ndarray:
    """(S, S) bool: pixels with a 4-neighbour of another label (both sides of every boundary)."""
    m = np.asarray(mask)
    out = np.zeros(m.shape, dtype=bool)
    rows, cols = m[:-1] != m[1:], m[:, :-1] != m[:, 1:]
    out[:-1] |= rows
    out[1:] |= rows
    out[:, :-1] |= cols
    out[:, 1:] |= cols
    return out


def mask_alignment(edges: np.ndarray, mask: np.ndarray) -> float:
    """Edge strength on the outline of ``mask`` over that of the band around it; NaN without an outline
    (an empty or full mask) or on a flat image."""
    line = outline(mask)
    if not line.any():
        return float("nan")
    distance = ndimage.distance_transform_edt(~line)
    band = edges[distance <= REACH * _scale(mask.shape)].mean()
    return float(edges[distance <= 1.0].mean() / band) if band > 0 else float("nan")


def edge_alignment(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N,) ``mask_alignment`` of masks (N, S, S) on images (N, C, S, S)."""
    return np.array([mask_alignment(edge_strength(img), m) for img, m in zip(images, masks, strict=True)])


def edge_auroc(images: np.ndarray, originals: np.ndarray, copies: np.ndarray) -> float | None:
    """AUROC of low edge alignment for copies (M, S, S) against their originals (M, S, S); None when
    fewer than 4 of each have an outline."""
    orig, copy = edge_alignment(images, originals), edge_alignment(images, copies)
    orig, copy = orig[np.isfinite(orig)], copy[np.isfinite(copy)]
    if min(orig.size, copy.size) < 4:
        return None
    labels = np.r_[np.zeros(orig.size), np.ones(copy.size)]
    return float(roc_auc_score(labels, -np.r_[orig, copy]))


def low_alignment_auroc(alignment: np.ndarray, flagged: np.ndarray) -> float | None:
    """AUROC of low edge alignment (N,) for the flagged masks (N,) bool against the others; None when
    fewer than 4 on a side have an outline."""
    ok = np.isfinite(alignment)
    if min((ok & flagged).sum(), (ok & ~flagged).sum()) < 4:
        return None
    return float(roc_auc_score(flagged[ok], -alignment[ok]))


@dataclass(frozen=True)
class JointMixture:
    """Two diagonal Gaussians over standardised (normalised network score, log edge alignment)."""

    gmm: GaussianMixture
    mean: np.ndarray  # (2,)
    std: np.ndarray  # (2,)
    fill: float  # log alignment used where a mask has no outline
    clean: int  # the component with the lower network score
    noisy_weight: float

    def features(self, net: np.ndarray, alignment: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            log_align = np.log(alignment)
        log_align = np.where(np.isfinite(log_align), log_align, self.fill)
        return (np.stack([net, log_align], 1) - self.mean) / self.std

    def clean_prob(self, net: np.ndarray, alignment: np.ndarray) -> np.ndarray:
        if net.size == 0:
            return np.ones(0)
        return np.asarray(self.gmm.predict_proba(self.features(net, alignment))[:, self.clean])


def fit_joint(net: np.ndarray, alignment: np.ndarray, seed: int, min_weight: float) -> JointMixture | str:
    """Fit the joint mixture to normalised network scores (N,) and edge alignments (N,); a reason (str)
    instead when it finds no two groups that agree: the group that fits the network worse must also
    follow the image's edges less, and each must hold at least ``min_weight`` of the masks."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_align = np.log(alignment)
    finite = np.isfinite(log_align)
    if finite.sum() < 8:
        return "too few masks have an outline to measure"
    fill = float(np.median(log_align[finite]))
    x = np.stack([net, np.where(finite, log_align, fill)], 1)
    mean, std = x.mean(0), x.std(0)
    if np.any(std < 1e-9):
        return "the scores or the edge alignments do not vary"
    gmm = GaussianMixture(2, covariance_type="diag", reg_covar=1e-4, max_iter=200, random_state=seed)
    gmm.fit((x - mean) / std)
    clean = int(np.argmin(gmm.means_[:, 0]))
    if gmm.means_[clean, 1] <= gmm.means_[1 - clean, 1]:
        return "the masks the network fits worse follow the image's edges as well as the others"
    if float(gmm.weights_.min()) < min_weight:
        return f"a joint group holds under {min_weight:.0%} of the masks"
    return JointMixture(gmm, mean, std, fill, clean, float(gmm.weights_[1 - clean]))
