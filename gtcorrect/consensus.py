"""A consensus of several masks per image, and how reliable each annotator is against it.

Where several annotators outlined the same image, training on the newest mask ("latest wins") throws
away what the others saw. ``staple`` is STAPLE (Warfield, Zou and Wells, IEEE TMI 2004) in its
multi-class form: every annotator has one confusion matrix theta[true class, drawn class], shared over
all the images they annotated (so a consistently sloppy annotator is recognised from all their masks),
and expectation-maximisation alternates the per-pixel posterior of the true class with those matrices.
An annotator's sensitivity is theta[1, 1] (foreground they draw as foreground, binary masks) and their
specificity theta[0, 0]. ``majority`` is the per-pixel vote (ties go to the lower class index: a pixel
is foreground only when more than half say so, for two annotators both).
Shape legend: I images, R_i annotators of image i, A annotators in all, K classes, S size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONSENSUS_KINDS: tuple[str, ...] = ("latest", "majority", "staple")


@dataclass(frozen=True)
class Consensus:
    """labels: I consensus masks (S, S) int64; confusion: (A, K, K) rows = true class, columns = drawn
    class, each row summing to 1 (NaN rows: the annotator never met that class); n_masks: (A,);
    prior: (K,) the class shares the fit assumed."""

    labels: list[np.ndarray]
    confusion: np.ndarray
    n_masks: np.ndarray
    iterations: int
    converged: bool
    prior: np.ndarray

    def label(self, stack: np.ndarray, who: Sequence[int]) -> np.ndarray:
        """The consensus (H, W) int64 of one image's masks (R, H, W) under the fitted matrices: the
        parameters can be fitted on reduced masks and applied to the full-size ones."""
        log_theta = np.log(np.clip(np.nan_to_num(self.confusion, nan=1.0 / self.prior.size), 1e-9, None))
        log_prior = np.log(np.clip(self.prior, 1e-6, None))
        return _posterior(stack, who, log_theta, log_prior).argmax(0).astype(np.int64)

    def sensitivity(self) -> np.ndarray:
        """(A,) share of true foreground each annotator drew as foreground (any foreground class)."""
        c = self.confusion
        return np.asarray(c[:, 1:, 1:].sum(2).mean(1))

    def specificity(self) -> np.ndarray:
        """(A,) share of true background each annotator drew as background."""
        return np.asarray(self.confusion[:, 0, 0])


def _check(masks: Sequence[np.ndarray], raters: Sequence[Sequence[int]], n_raters: int) -> None:
    if len(masks) != len(raters):
        raise ValueError(f"got {len(masks)} mask stacks but {len(raters)} rater lists.")
    for i, (stack, who) in enumerate(zip(masks, raters, strict=True)):
        if stack.ndim != 3 or stack.shape[0] != len(who) or stack.shape[0] == 0:
            raise ValueError(
                f"image {i}: masks must be (R, S, S) with R = {len(who)} raters, got {stack.shape}."
            )
        if len(set(who)) != len(who) or min(who) < 0 or max(who) >= n_raters:
            raise ValueError(
                f"image {i}: raters must be distinct indices in 0..{n_raters - 1}, got {list(who)}."
            )


def majority(masks: Sequence[np.ndarray], num_classes: int) -> list[np.ndarray]:
    """Per-pixel vote of each image's masks (R_i, S, S) -> I masks (S, S) int64."""
    out = []
    for stack in masks:
        votes = np.stack([(stack == k).sum(0) for k in range(num_classes)])
        # argmax picks the lowest class on ties; a strict majority for foreground in the binary case.
        out.append(votes.argmax(0).astype(np.int64))
    return out


def staple(
    masks: Sequence[np.ndarray],
    raters: Sequence[Sequence[int]],
    n_raters: int,
    num_classes: int = 2,
    *,
    max_iter: int = 50,
    tol: float = 1e-5,
    init: float = 0.9,
) -> Consensus:
    """Multi-class STAPLE over a dataset: image i has masks ``masks[i]`` (R_i, S, S) int drawn by the
    annotators ``raters[i]`` (R_i indices into 0..n_raters-1). The class prior is the share of each
    class over all masks; every confusion matrix starts with ``init`` on its diagonal. Stops when no
    matrix entry moves more than ``tol``."""
    _check(masks, raters, n_raters)
    k = num_classes
    prior = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=k)[:k].astype(np.float64)
    prior = prior / prior.sum()
    log_prior = np.log(np.clip(prior, 1e-6, None))
    off = (1.0 - init) / max(k - 1, 1)
    theta = np.full((n_raters, k, k), off) + np.eye(k) * (init - off)
    n_masks = np.zeros(n_raters, dtype=np.int64)
    for who in raters:
        n_masks[list(who)] += 1
    converged, iterations = False, 0
    posteriors: list[np.ndarray] = []
    while iterations < max_iter and not converged:
        iterations += 1
        log_theta = np.log(np.clip(theta, 1e-9, None))
        counts = np.zeros((n_raters, k, k))
        posteriors = []
        for stack, who in zip(masks, raters, strict=True):
            w = _posterior(stack, who, log_theta, log_prior)
            posteriors.append(w)
            for r, drawn in zip(who, stack, strict=True):
                for label in range(k):
                    counts[r, :, label] += w[:, drawn == label].sum(1)
        totals = counts.sum(2, keepdims=True)
        new = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), theta)
        converged = float(np.abs(new - theta).max()) < tol
        theta = new
    labels = [w.argmax(0).astype(np.int64) for w in posteriors]
    seen = np.zeros((n_raters, k), dtype=bool)
    for who, lab in zip(raters, labels, strict=True):
        present = np.bincount(lab.ravel(), minlength=k)[:k] > 0
        seen[list(who)] |= present
    confusion = np.where(seen[:, :, None], theta, np.nan)
    return Consensus(labels, confusion, n_masks, iterations, converged, prior)


def _posterior(
    stack: np.ndarray, who: Sequence[int], log_theta: np.ndarray, log_prior: np.ndarray
) -> np.ndarray:
    """(K, S, S) posterior of the true class of every pixel given the image's masks (R, S, S)."""
    log_w = np.broadcast_to(log_prior[:, None, None], (log_prior.size, *stack.shape[1:])).copy()
    for r, drawn in zip(who, stack, strict=True):
        log_w += log_theta[r][:, drawn]
    log_w -= log_w.max(0, keepdims=True)
    w = np.exp(log_w)
    return np.asarray(w / w.sum(0, keepdims=True))
