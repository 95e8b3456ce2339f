import pytest
import torch
import torch.nn.functional as F

from gtcorrect.losses import (
    as_soft_target,
    confident_disagreement,
    elr_penalty,
    elr_update,
    excess_disagreement,
    per_sample_dice,
    per_sample_loss,
    seg_loss,
)


def _masks(seed: int = 0, b: int = 3, s: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, s, s, generator=g) > 0.6).long()


def _confident_logits(mask: torch.Tensor, scale: float = 8.0) -> torch.Tensor:
    return F.one_hot(mask, 2).permute(0, 3, 1, 2).float() * 2 * scale - scale


def test_index_and_one_hot_targets_give_the_same_loss() -> None:
    mask = _masks()
    logits = torch.randn(3, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    soft = as_soft_target(mask, 2)
    assert torch.allclose(seg_loss(logits, mask), seg_loss(logits, soft))
    assert torch.allclose(per_sample_loss(logits, mask), per_sample_loss(logits, soft))


def test_soft_targets_are_not_rounded() -> None:
    logits = torch.zeros(2, 2, 8, 8, requires_grad=True)
    half = torch.full((2, 2, 8, 8), 0.5)
    loss = seg_loss(logits, half)
    loss.backward()
    # The uniform prediction matches a 50/50 target: its CE gradient is zero (rounding would not be).
    ce_only = -(half * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.autograd.grad(ce_only, logits)[0].abs().max() < 1e-7
    assert logits.grad is not None


def test_perfect_prediction_scores_near_zero_and_wrong_mask_high() -> None:
    mask = _masks()
    logits = _confident_logits(mask)
    for kind in ("ce+dice", "ce", "dice", "confident", "excess"):
        assert per_sample_loss(logits, mask, kind).shape == (3,)
        assert per_sample_loss(logits, mask, kind).max() < 0.01
        assert per_sample_loss(logits, 1 - mask, kind).min() > 0.5
    assert torch.allclose(per_sample_dice(logits, mask), torch.ones(3), atol=1e-3)


def test_confident_disagreement_ignores_unsure_pixels() -> None:
    mask = _masks()
    logits = _confident_logits(mask)
    wrong = 1 - mask
    unsure = logits * 0.01  # max prob ~0.54: nothing is confident
    assert confident_disagreement(unsure, wrong).max() == 0.0
    assert confident_disagreement(logits, wrong).min() > 0.5


def test_excess_disagreement_is_explained_away_by_uncertainty() -> None:
    mask = _masks()
    wrong = 1 - mask
    logits = _confident_logits(mask)
    # A network that is unsure everywhere (p = 0.5): any label's disagreement is what it expects.
    unsure = torch.zeros_like(logits)
    assert torch.allclose(excess_disagreement(unsure, mask), torch.zeros(3), atol=1e-6)
    assert torch.allclose(excess_disagreement(unsure, wrong), torch.zeros(3), atol=1e-6)
    # Sure and contradicted: about one unit per wrong pixel, over the label + predicted foreground.
    expected = (mask.numel() / 3) / ((wrong + mask).sum((1, 2)).float() + 1)
    assert torch.allclose(excess_disagreement(logits, wrong), expected, rtol=0.01)
    # The same wrong pixels weigh more on a small object than on a large one (no object-size bias
    # towards small polyps, unlike a mean pixel loss).
    small, large = torch.zeros(1, 16, 16, dtype=torch.long), torch.zeros(1, 16, 16, dtype=torch.long)
    small[:, 6:9, 6:9], large[:, 2:14, 2:14] = 1, 1
    shifted_small, shifted_large = small.roll(2, 2), large.roll(2, 2)
    assert excess_disagreement(_confident_logits(small), shifted_small) > excess_disagreement(
        _confident_logits(large), shifted_large
    )


def test_bad_kind_and_shapes_name_the_value() -> None:
    logits = torch.zeros(2, 2, 8, 8)
    with pytest.raises(ValueError, match="'focal'"):
        per_sample_loss(logits, torch.zeros(2, 8, 8, dtype=torch.long), "focal")
    with pytest.raises(ValueError, match=r"\(2, 9, 9\)"):
        seg_loss(logits, torch.zeros(2, 9, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="3 channels|need 2 channels"):
        seg_loss(logits, torch.zeros(2, 3, 8, 8))


def test_elr_memory_is_a_distribution_and_penalty_rewards_agreement() -> None:
    probs = torch.softmax(torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0)), 1)
    memory = elr_update(torch.zeros_like(probs), probs, beta=0.7)
    assert torch.allclose(memory.sum(1), torch.full((2, 4, 4), 0.3), atol=1e-5)
    memory = elr_update(memory / memory.sum(1, keepdim=True), probs, beta=0.7)
    assert torch.allclose(memory.sum(1), torch.ones(2, 4, 4), atol=1e-5)
    agree = elr_penalty(memory, memory, lam=3.0)
    disagree = elr_penalty(1 - memory, memory, lam=3.0)
    assert agree < disagree
