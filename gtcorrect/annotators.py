"""Per-annotator statistics: is one annotator's outline consistently wider or narrower than the rest?

A per-mask score cannot see a bias that every mask of one annotator shares and the network learns
(BENCHMARKS.md, systematic regime). Within one dataset, though, that annotator's masks differ from the
model's prediction in the same direction, and the others' do not. For each mask: the signed offset of
its outline from the predicted outline (mean signed distance over both sides of the given mask's
boundary; positive: outside the prediction, i.e. wider), its area over the predicted area, and its Dice
with the prediction. Per annotator: their means, the offset relative to the other annotators' masks
(the model learnt from everyone, so absolute offsets lean towards the majority), and a verdict in words.
Two annotators who differ are each "wider" or "narrower" than the other; the image breaks the tie: the
one whose outlines follow the image's edges less (``gtcorrect.boundary``) is the ``suspect``.
Offsets are in pixels of the original images (``scales``: original side over training side per mask).
Spatial Correction (Yao et al., ICLR 2023) models label noise as such a boundary offset.
Shape legend: N masks, S training size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from gtcorrect.evidence import outline_offset
from gtcorrect.metrics import dice

MIN_MASKS = 5  # fewer masks: no verdict
MIN_OFFSET_PX = 1.0  # a consistent offset smaller than this (original pixels) is not called a bias
MIN_T = 3.0  # the mean offset must be this many standard errors from zero


@dataclass(frozen=True)
class AnnotatorStats:
    annotator: str
    n_masks: int
    n_flagged: int
    dice_vs_model: float  # mean Dice(given, predicted)
    area_ratio: float  # median given area / predicted area
    offset_px: float  # mean signed outline offset from the prediction (+: wider), original pixels
    offset_spread_px: float  # standard deviation of the per-mask offsets
    relative_offset_px: float | None  # offset_px minus the other annotators' mean; None with one annotator
    edge_alignment: float | None  # mean edge alignment of the outlines (gtcorrect.boundary); None: not given
    suspect: bool  # a consistent offset, and (with several annotators) outlines that follow the edges less
    verdict: str


def mask_stats(given: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per mask (N,): outline offset (px at S), area ratio given / predicted, Dice(given, predicted)."""
    offsets = np.array([outline_offset(g, p) for g, p in zip(given, predicted, strict=True)])
    area_g = (np.asarray(given) > 0).sum((1, 2)).astype(np.float64)
    area_p = (np.asarray(predicted) > 0).sum((1, 2)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(area_p > 0, area_g / area_p, np.nan)
    dices = np.array([dice(g > 0, p > 0) for g, p in zip(given, predicted, strict=True)])
    return offsets, ratios, dices


def _consistent(n: int, offset: float, spread: float) -> bool:
    if n < MIN_MASKS or math.isnan(offset):
        return False
    t = abs(offset) / (spread / math.sqrt(n)) if spread > 0 else math.inf
    return abs(offset) >= MIN_OFFSET_PX and t >= MIN_T


def _verdict(n: int, offset: float, spread: float, reference: str, edges: str) -> str:
    if n < MIN_MASKS:
        return f"too few masks ({n}) to judge"
    if math.isnan(offset):
        return "no outlines to compare"
    if _consistent(n, offset, spread):
        side = "wider" if offset > 0 else "narrower"
        return f"outlines {abs(offset):.1f} px {side} than {reference} on average ({n} masks){edges}"
    return f"no consistent offset from {reference} ({offset:+.1f} px, {n} masks)"


def annotator_report(
    annotators: Sequence[str],
    given: np.ndarray,
    predicted: np.ndarray,
    flagged: np.ndarray,
    scales: np.ndarray | float = 1.0,
    alignment: np.ndarray | None = None,
) -> list[AnnotatorStats]:
    """Statistics per annotator (sorted by name) of masks ``given`` (N, S, S) against the model's
    ``predicted`` (N, S, S), with the noise flags (N,), per-mask pixel scales (N,) or one scale, and the
    given outlines' edge alignment (N,) (``gtcorrect.boundary.edge_alignment``) when known."""
    n = len(annotators)
    if given.shape[0] != n or predicted.shape != given.shape or np.asarray(flagged).shape != (n,):
        raise ValueError(
            f"annotators ({n}), given {given.shape}, predicted {predicted.shape} and flagged "
            f"{np.asarray(flagged).shape} must describe the same masks."
        )
    offsets, ratios, dices = mask_stats(given, predicted)
    offsets = offsets * np.broadcast_to(np.asarray(scales, dtype=np.float64), (n,))
    aligned = np.full(n, np.nan) if alignment is None else np.asarray(alignment, dtype=np.float64)
    names = np.asarray(annotators, dtype=object)
    several = len(set(annotators)) > 1
    out = []
    for name in sorted(set(annotators)):
        mine = names == name
        own = offsets[mine & np.isfinite(offsets)]
        others = offsets[~mine & np.isfinite(offsets)]
        mean = float(own.mean()) if own.size else float("nan")
        spread = float(own.std(ddof=1)) if own.size > 1 else 0.0
        relative = mean - float(others.mean()) if several and others.size and own.size else None
        shown, reference = (relative, "the other annotators") if relative is not None else (mean, "the model")
        edge = _mean(aligned[mine])
        edge_others = _mean(aligned[~mine]) if several else None
        follows_less = edge is not None and edge_others is not None and edge < edge_others
        suspect = _consistent(int(own.size), shown, spread) and (relative is None or follows_less)
        edges = ""
        if edge is not None and edge_others is not None:
            side = "less" if follows_less else "more"
            edges = (
                f"; follows the image's edges {side} than they do (alignment {edge:.2f} vs {edge_others:.2f})"
            )
        finite_ratios = ratios[mine][np.isfinite(ratios[mine])]
        out.append(
            AnnotatorStats(
                annotator=name,
                n_masks=int(mine.sum()),
                n_flagged=int(np.asarray(flagged)[mine].sum()),
                dice_vs_model=float(np.nanmean(dices[mine])),
                area_ratio=float(np.median(finite_ratios)) if finite_ratios.size else float("nan"),
                offset_px=mean,
                offset_spread_px=spread,
                relative_offset_px=relative,
                edge_alignment=edge,
                suspect=bool(suspect),
                verdict=_verdict(int(own.size), shown, spread, reference, edges),
            )
        )
    return out


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def shift_outline(mask: np.ndarray, offset_px: float) -> np.ndarray:
    """The binary mask (S, S) with its outline moved ``offset_px`` outwards (negative: inwards), by the
    signed distance to the outline; empty and full masks are returned unchanged."""
    m = np.asarray(mask) > 0
    if not m.any() or m.all():
        return np.asarray(mask).copy()
    signed = np.where(m, 0.5 - ndimage.distance_transform_edt(m), ndimage.distance_transform_edt(~m) - 0.5)
    return (signed < offset_px).astype(np.asarray(mask).dtype)


@dataclass(frozen=True)
class BiasFinding:
    """A suspect annotator: which masks are theirs (N,) bool, the estimated share of their masks that carry
    the bias, each mask's probability of carrying it (N,; NaN where the outline offset is undefined), the
    likelihood ratio behind that probability (N,: how much more likely the mask's offset is under the bias
    than under the other annotators' offsets) and the shift that moves their outlines back (training
    pixels). For the other annotators' masks the probability is the likelihood ratio at even odds: how much
    their outline looks like the bias rather than like the rest."""

    annotator: str
    shift_px: float
    mine: np.ndarray
    share: float
    noisy_prob: np.ndarray
    likelihood_ratio: np.ndarray


def bias_findings(
    annotators: Sequence[str], given: np.ndarray, predicted: np.ndarray, report: Sequence[AnnotatorStats]
) -> list[BiasFinding]:
    """For each ``suspect`` annotator with others to compare against: how likely each mask (N, S, S, at
    training size, report made with scale 1) carries their bias. Their outline offsets from the prediction
    are a mixture of the others' offsets (a Gaussian fitted to them) and a biased component, fitted with the
    share of biased masks by EM (``bias_share``); the share is each of their masks' prior."""
    offsets, _, _ = mask_stats(given, predicted)
    names = np.asarray(annotators, dtype=object)
    finite = np.isfinite(offsets)
    out = []
    for stats in report:
        if not stats.suspect or stats.relative_offset_px is None:
            continue
        mine = names == stats.annotator
        own, others = offsets[mine & finite], offsets[~mine & finite]
        if own.size < MIN_MASKS or others.size < MIN_MASKS:
            continue
        unbiased = (float(others.mean()), float(others.std(ddof=1)))
        share, biased = bias_share(own, unbiased)
        with np.errstate(invalid="ignore"):
            log_ratio = _log_normal(offsets, *biased) - _log_normal(offsets, *unbiased)
            prior = np.clip(np.where(mine, share, 0.5), 1e-9, 1.0 - 1e-9)
            prob = np.where(finite, _sigmoid(log_ratio + np.log(prior / (1.0 - prior))), np.nan)
            ratio = np.where(finite, np.exp(np.clip(log_ratio, -700.0, 700.0)), np.nan)
        out.append(BiasFinding(stats.annotator, -float(stats.relative_offset_px), mine, share, prob, ratio))
    return out


def bias_share(
    offsets: np.ndarray, unbiased: tuple[float, float], iterations: int = 200
) -> tuple[float, tuple[float, float]]:
    """EM for a two-component mixture of one annotator's outline offsets (M,): the unbiased component is
    held at ``unbiased`` (mean, sd: the other annotators'), the biased one's mean and sd are fitted (sd at
    least half the unbiased one's, so that it cannot shrink onto single masks). Returns the biased share
    and the biased component's (mean, sd)."""
    x = np.asarray(offsets, dtype=np.float64)
    floor = max(unbiased[1], 1e-3) / 2.0
    share, mean, sd = 0.5, float(x.mean()), max(float(x.std()), floor)
    log_unbiased = _log_normal(x, *unbiased)
    for _ in range(iterations):
        if not 0.0 < share < 1.0:
            break
        resp = _sigmoid(np.log(share / (1.0 - share)) + _log_normal(x, mean, sd) - log_unbiased)
        total = float(resp.sum())
        if total <= 1e-9:
            return 0.0, (mean, sd)
        new_share = total / x.size
        mean = float((resp * x).sum() / total)
        sd = max(float(np.sqrt((resp * (x - mean) ** 2).sum() / total)), floor)
        converged = abs(new_share - share) < 1e-6
        share = new_share
        if converged:
            break
    return share, (mean, sd)


def _log_normal(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    """Log of the normal density up to the constant both components share."""
    sd = max(sd, 1e-3)
    return np.asarray(-0.5 * ((x - mean) / sd) ** 2 - np.log(sd))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))
