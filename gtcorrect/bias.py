"""The annotator check: where the job knows who drew each mask, a biased annotator's masks are flagged and
their outlines moved back.

A bias that one annotator's masks all share (every outline 5 px too wide) is invisible to per-mask scores:
the network learns it. The annotator report (``gtcorrect.annotators``) sees it as a consistent offset from
the other annotators; when it calls an annotator ``suspect``, each of their masks gets a probability of
carrying the bias (``bias_findings``: is its outline offset more like the biased share of theirs or like the
others'?), which enters every mask's probability of being wrong (with the network's verdict), and a
correction that moves its outline back by the annotator's offset (``shift_outline``; Spatial Correction, Yao
et al., ICLR 2023, models label noise as such a shift). The correction is proposed for every flagged mask of
theirs whose moved outline follows the image's edges better than the given one (``gtcorrect.boundary``): the
edges are the per-mask check, independent of the network (the offset posterior overlaps too much to ask 0.9
of it, BENCHMARKS.md); the others are counted as vetoed. Nothing is proposed when the job cannot vouch for
its network (too few samples, no validation, a weak network). Binary masks only (one foreground class).
Shape legend: N training masks, C channels, S size.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gtcorrect.annotators import BiasFinding, annotator_report, bias_findings, shift_outline
from gtcorrect.boundary import edge_alignment
from gtcorrect.config import TrainConfig
from gtcorrect.verdict import flag


def _check(
    images: np.ndarray,
    masks: np.ndarray,
    annotators: Sequence[str],
    predicted: np.ndarray,
    flagged: np.ndarray,
) -> tuple[np.ndarray, list[BiasFinding]]:
    """The given outlines' edge alignment (N,) and the suspect annotators' findings (none for masks
    with more than one foreground class or a single annotator)."""
    if int(masks.max(initial=0)) > 1 or len(set(annotators)) < 2:
        return np.zeros(0), []
    alignment = edge_alignment(images, masks)
    report = annotator_report(annotators, masks, predicted, flagged, 1.0, alignment)
    return alignment, bias_findings(annotators, masks, predicted, report)


def _move_back(
    images: np.ndarray, masks: np.ndarray, alignment: np.ndarray, shift_px: float, idx: np.ndarray
) -> tuple[dict[int, np.ndarray], int]:
    """Masks ``idx`` with their outlines moved by ``shift_px`` where the moved outline follows the
    image's edges better than the given one; and how many the edges vetoed."""
    moved: dict[int, np.ndarray] = {}
    for i in idx:
        shifted = shift_outline(masks[i], shift_px)
        after = edge_alignment(images[i : i + 1], shifted[None])[0]
        if np.isfinite(after) and np.isfinite(alignment[i]) and after <= alignment[i]:
            continue
        moved[int(i)] = shifted.astype(np.int64)
    return moved, int(idx.size) - len(moved)


def bias_targets(
    config: TrainConfig,
    images: np.ndarray,
    masks: np.ndarray,
    annotators: Sequence[str],
    predicted: np.ndarray,
    flagged: np.ndarray,
) -> dict[int, np.ndarray]:
    """Bias-aware training: what a suspect annotator's masks (training index -> mask) are learnt from
    for the rest of the run, given the network's predictions (N, S, S) so far. Their masks that carry the
    bias (clean probability 1 - p <= ``g.tau``), with the outline moved back where the edges agree;
    empty when no annotator is suspect."""
    alignment, findings = _check(images, masks, annotators, predicted, flagged)
    out: dict[int, np.ndarray] = {}
    for f in findings:
        idx = np.flatnonzero(f.mine & np.isfinite(f.noisy_prob))
        carries = idx[flag(f.noisy_prob[idx], config.g)]
        out.update(_move_back(images, masks, alignment, f.shift_px, carries)[0])
    return out


def _fused(clean: np.ndarray, findings: Sequence[BiasFinding]) -> np.ndarray:
    """The network's clean probabilities (N,) with the annotator check's evidence added. A suspect's mask
    is wrong if it carries the bias or if the network finds it wrong otherwise (two independent ways:
    noisy-or). Everyone else's masks keep the network's odds times the likelihood ratio of their outline
    offset under the strongest finding (naive Bayes): a network trained on a biased annotator's masks
    partly learns the bias, and an outline like the other annotators' answers its doubt. An undefined
    offset adds nothing."""
    mine = np.stack([f.mine for f in findings])
    carries = np.stack([np.nan_to_num(f.noisy_prob, nan=0.0) for f in findings])
    ratios = np.stack([np.nan_to_num(f.likelihood_ratio, nan=1.0, posinf=1e12) for f in findings])
    noisy = np.clip(1.0 - clean, 1e-9, 1.0 - 1e-9)
    odds = noisy / (1.0 - noisy) * np.clip(ratios.max(0), 1e-12, 1e12)
    others = 1.0 / (1.0 + odds)
    own = (1.0 - carries[mine.argmax(0), np.arange(clean.size)]) * clean
    return np.asarray(np.where(mine.any(0), own, others))


@dataclass
class AnnotatorCheck:
    """The annotator check's result on the N training masks: every mask's probability of being wrong
    with the annotator evidence added, the suspects' outlines moved back (training index -> mask) and one
    summary per suspect annotator."""

    noise_prob: np.ndarray
    moved: dict[int, np.ndarray]
    summary: list[dict[str, Any]]


def check_annotators(
    config: TrainConfig,
    images: np.ndarray,
    masks: np.ndarray,
    annotators: Sequence[str],
    predicted: np.ndarray,
    noise_prob: np.ndarray,
    *,
    trusted: bool,
    trained: Collection[int] = (),
) -> AnnotatorCheck | None:
    """The annotator check of the training images (N, C, S, S) and given masks (N, S, S) under the kept
    network's predictions, on top of the verdict's probabilities (N,); None when no annotator is suspect.
    ``trusted``: whether the job vouches for its network (otherwise it still ranks, but its outlines move
    nobody's masks); ``trained``: the masks learnt from with their outlines moved back (``bias_targets``)."""
    alignment, findings = _check(images, masks, annotators, predicted, flag(noise_prob, config.g))
    if not findings:
        return None
    # Two pieces of evidence on every mask: the network's verdict, and how much the mask's outline looks
    # like a suspect's. A network trained on a biased annotator's masks partly learns the bias, so its
    # disagreement with the others' masks is not theirs to answer for.
    noise = 1.0 - _fused(1.0 - np.asarray(noise_prob), findings)
    flags = flag(noise, config.g)
    moved: dict[int, np.ndarray] = {}
    summary: list[dict[str, Any]] = []
    learnt = np.fromiter(trained, dtype=np.int64)
    for f in findings:
        idx = np.flatnonzero(f.mine & np.isfinite(f.noisy_prob))
        movable = idx[flags[idx]] if trusted else idx[:0]
        back, vetoed = _move_back(images, masks, alignment, f.shift_px, movable)
        moved.update(back)
        summary.append(
            {
                "annotator": f.annotator,
                "shift_px": f.shift_px,
                "share": f.share,
                "masks": int(idx.size),
                "flagged": int(flags[idx].sum()),
                "proposed": len(back),
                "vetoed": vetoed,
                "trained_moved": int(np.isin(idx, learnt).sum()),
            }
        )
    return AnnotatorCheck(noise, moved, summary)
