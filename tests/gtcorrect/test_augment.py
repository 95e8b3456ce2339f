import pytest
import torch

from gtcorrect.augment import augment_batch
from gtcorrect.config import AugmentConfig


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(4, 32, 32, dtype=torch.long)
    for i in range(4):
        y, x = torch.randint(6, 20, (2,), generator=g).tolist()
        masks[i, y : y + 10, x : x + 8] = 1
    images = torch.cat([masks[:, None].float(), torch.rand(4, 2, 32, 32, generator=g)], 1)
    return images, masks


def test_same_generator_state_gives_the_same_batch() -> None:
    images, masks = _batch()
    cfg = AugmentConfig()
    a = augment_batch(images, masks, cfg, torch.Generator().manual_seed(5))
    b = augment_batch(images, masks, cfg, torch.Generator().manual_seed(5))
    c = augment_batch(images, masks, cfg, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_disabled_is_the_identity() -> None:
    images, masks = _batch()
    out = augment_batch(images, masks, AugmentConfig(enabled=False), torch.Generator())
    assert out[0] is images and out[1] is masks


def test_flips_only_are_exact_flips_of_image_and_mask_together() -> None:
    images, masks = _batch()
    cfg = AugmentConfig(affine_degrees=0.0, affine_scale=0.0, intensity=0.0)
    out_img, out_mask = augment_batch(images, masks, cfg, torch.Generator().manual_seed(3))
    seen = set()
    for i in range(4):
        variants = {
            dims: (images[i].flip([d + 1 for d in dims]), masks[i].flip(list(dims)))
            for dims in [(), (0,), (1,), (0, 1)]
        }
        match = [d for d, (im, mk) in variants.items() if torch.allclose(out_img[i], im, atol=1e-5)]
        assert len(match) == 1
        assert torch.equal(out_mask[i], variants[match[0]][1])
        seen.add(match[0])
    assert len(seen) > 1


def test_index_targets_follow_the_image_geometry() -> None:
    images, masks = _batch()
    cfg = AugmentConfig(affine_degrees=20.0, affine_scale=0.15, intensity=0.0)
    out_img, out_mask = augment_batch(images, masks, cfg, torch.Generator().manual_seed(1))
    assert out_mask.dtype == torch.int64 and set(out_mask.unique().tolist()) <= {0, 1}
    # Channel 0 of the image is the mask itself: bilinear and nearest warps must agree.
    agree = ((out_img[:, 0] > 0.5).long() == out_mask).float().mean()
    assert agree > 0.97
    assert not torch.equal(out_mask, masks)


def test_soft_targets_stay_distributions() -> None:
    images, masks = _batch()
    soft = torch.stack([1.0 - masks.float(), masks.float()], 1) * 0.8 + 0.1
    _, out = augment_batch(images, soft, AugmentConfig(affine_degrees=30.0), torch.Generator().manual_seed(2))
    assert out.dtype == torch.float32
    assert torch.allclose(out.sum(1), torch.ones(4, 32, 32), atol=1e-5)


def test_mismatched_shapes_name_them() -> None:
    images, masks = _batch()
    with pytest.raises(ValueError, match=r"\(4, 16, 16\)"):
        augment_batch(images, masks[:, :16, :16], AugmentConfig(), torch.Generator())
