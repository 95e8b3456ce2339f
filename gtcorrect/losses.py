"""Segmentation losses: batch loss, per-sample scores for the G stage, and the ELR regulariser.

Shape legend: B batch, K classes (0 = background), H, W spatial. Targets are either class indices
(B, H, W) int64 or soft targets (B, K, H, W) float whose K values sum to 1 per pixel; soft targets are
never cast to integers (a soft-target cross-entropy is used instead).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SAMPLE_LOSS_KINDS: tuple[str, ...] = ("ce+dice", "ce", "dice", "confident", "excess")
_DICE_SMOOTH = 1.0  # keeps an empty prediction of an empty mask at Dice 1 instead of 0/0


def as_soft_target(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Return (B, K, H, W) float probabilities from index (B, H, W) or soft (B, K, H, W) targets."""
    if target.dim() == 3:
        if target.dtype.is_floating_point:
            raise ValueError(f"index targets must be integer, got dtype {target.dtype}.")
        return F.one_hot(target.long(), num_classes).permute(0, 3, 1, 2).float()
    if target.dim() == 4:
        if target.shape[1] != num_classes:
            raise ValueError(f"soft targets need {num_classes} channels, got shape {tuple(target.shape)}.")
        return target.float()
    raise ValueError(f"targets must be (B, H, W) or (B, K, H, W), got shape {tuple(target.shape)}.")


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, K, H, W), got shape {tuple(logits.shape)}.")
    spatial = target.shape[-2:]
    if target.shape[0] != logits.shape[0] or spatial != logits.shape[-2:]:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits shape {tuple(logits.shape)}."
        )


def per_sample_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean pixel cross-entropy per sample, (B,). Soft targets use -sum_k t_k log p_k."""
    _check(logits, target)
    soft = as_soft_target(target, logits.shape[1])
    return -(soft * F.log_softmax(logits, dim=1)).sum(1).mean((1, 2))


def per_sample_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice of the foreground classes 1..K-1 (averaged over classes) per sample, (B,)."""
    _check(logits, target)
    soft = as_soft_target(target, logits.shape[1])[:, 1:]
    probs = torch.softmax(logits, dim=1)[:, 1:]
    inter = (probs * soft).sum((2, 3))
    denom = probs.sum((2, 3)) + soft.sum((2, 3))
    return ((2 * inter + _DICE_SMOOTH) / (denom + _DICE_SMOOTH)).mean(1)


def confident_disagreement(logits: torch.Tensor, target: torch.Tensor, floor: float = 0.8) -> torch.Tensor:
    """Disagreement of the given mask with the network's own confident prediction, (B,).

    Counts pixels whose max probability is >= ``floor`` and whose argmax differs from the label, over
    (|label foreground| + |confident predicted foreground| + 1). Pixels the network is unsure about
    (hard images, object boundaries still being learned) do not count, so a hard image with a correct
    mask scores low while a clearly dilated or shifted mask scores high; the denominator removes the
    object-size bias of a mean pixel loss. Soft targets use their argmax.
    """
    _check(logits, target)
    labels = target if target.dim() == 3 else target.argmax(1)
    probs = torch.softmax(logits, dim=1)
    conf, pred = probs.max(1)
    confident = conf >= floor
    wrong = (confident & (pred != labels)).sum((1, 2)).float()
    size = (labels > 0).sum((1, 2)).float() + (confident & (pred > 0)).sum((1, 2)).float()
    return wrong / (size + 1.0)


def excess_disagreement(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Disagreement of the given mask with the prediction beyond what the network's own uncertainty
    explains, per sample (B,): a difficulty-normalised score.

    For a pixel with foreground probability p, a label drawn from the network's belief disagrees with
    it by E|y - p| = 2p(1 - p) on average. The score is sum_pixels(|y - p| - 2p(1 - p)) over
    (|label foreground| + sum p + 1). On a hard image the network is unsure (p near 0.5), so a correct
    mask's disagreement is explained by that uncertainty and the score stays near 0; a dilated, shifted
    or eroded mask where the network is sure adds nearly 1 per wrong pixel. The denominator removes the
    object-size bias of a mean pixel loss. p = 1 - P(background), y = label > 0 (soft targets: their
    foreground mass): with several foreground classes only the foreground/background boundary counts,
    and a mask that swaps one foreground class for another is not seen (use "ce+dice" there).
    """
    _check(logits, target)
    soft = as_soft_target(target, logits.shape[1])
    y = soft[:, 1:].sum(1)
    p = 1.0 - torch.softmax(logits, dim=1)[:, 0]
    excess = ((y - p).abs() - 2.0 * p * (1.0 - p)).sum((1, 2))
    return excess / (y.sum((1, 2)) + p.sum((1, 2)) + 1.0)


def per_sample_loss(
    logits: torch.Tensor, target: torch.Tensor, kind: str = "ce+dice", *, floor: float = 0.8
) -> torch.Tensor:
    """Per-sample score (B,): "ce+dice" = mean CE + (1 - soft Dice) (the paper-style reference), "ce",
    "dice" (= 1 - soft Dice), "confident" (``confident_disagreement``; ``floor`` is its threshold) or
    "excess" (``excess_disagreement``)."""
    if kind == "ce+dice":
        return per_sample_ce(logits, target) + 1.0 - per_sample_dice(logits, target)
    if kind == "ce":
        return per_sample_ce(logits, target)
    if kind == "dice":
        return 1.0 - per_sample_dice(logits, target)
    if kind == "confident":
        return confident_disagreement(logits, target, floor)
    if kind == "excess":
        return excess_disagreement(logits, target)
    raise ValueError(f"per-sample loss kind must be one of {SAMPLE_LOSS_KINDS}, got {kind!r}.")


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_seg = 0.5 * cross-entropy + 0.5 * (1 - soft foreground Dice), averaged over the batch (scalar)."""
    return 0.5 * per_sample_ce(logits, target).mean() + 0.5 * (1.0 - per_sample_dice(logits, target)).mean()


def elr_update(memory: torch.Tensor, probs: torch.Tensor, beta: float = 0.7) -> torch.Tensor:
    """ELR target update per pixel (Liu et al., NeurIPS 2020): t <- beta t + (1 - beta) p / sum p.

    memory, probs: (B, K, H, W); returns the new memory (no gradient).
    """
    p = probs.detach().clamp(1e-4, 1.0 - 1e-4)
    return beta * memory + (1.0 - beta) * p / p.sum(1, keepdim=True)


def elr_penalty(probs: torch.Tensor, memory: torch.Tensor, lam: float = 3.0) -> torch.Tensor:
    """ELR regulariser lam * mean_pixels log(1 - <t, p>) (scalar); pulls p towards its own history t.

    probs (with gradient) and memory: (B, K, H, W).
    """
    p = probs.clamp(1e-4, 1.0 - 1e-4)
    inner = (memory.detach() * p).sum(1)
    return lam * torch.log((1.0 - inner).clamp_min(1e-4)).mean()
