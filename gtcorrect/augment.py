"""Train-time augmentation in torch: flips, a small affine warp and intensity jitter.

Shape legend: B batch, C image channels, K classes, S square size. Every random draw comes from the
given ``torch.Generator`` (on the CPU; the draws are moved to the data's device), so a batch's
augmentation is a pure function of the generator state: resuming an epoch replays it exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gtcorrect.config import AugmentConfig


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _affine_theta(n: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """(B, 2, 3) affine matrices in normalised coordinates: flips, rotation and isotropic scale."""
    angle = _uniform(n, -cfg.affine_degrees, cfg.affine_degrees, generator) * math.pi / 180.0
    scale = _uniform(n, 1.0 - cfg.affine_scale, 1.0 + cfg.affine_scale, generator)
    flip_x = torch.ones(n, dtype=torch.float64)
    flip_y = torch.ones(n, dtype=torch.float64)
    if cfg.flip:
        flip_x = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
        flip_y = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos * flip_x
    theta[:, 0, 1] = -sin * flip_y
    theta[:, 1, 0] = sin * flip_x
    theta[:, 1, 1] = cos * flip_y
    return theta


def augment_batch(
    images: torch.Tensor, targets: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment images (B, C, S, S) and targets (B, S, S) int64 or (B, K, S, S) float together.

    The same geometric warp goes to images (bilinear, zero padding = the normalised mean) and targets
    (nearest for index targets, padding = background 0; bilinear for soft targets, with the mass that
    falls outside the image given to the background). Intensity jitter (images only) scales contrast
    by 1 +- ``cfg.intensity`` and shifts brightness by +- ``cfg.intensity`` per image.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, S, S), got shape {tuple(images.shape)}.")
    if targets.shape[0] != images.shape[0] or targets.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"targets shape {tuple(targets.shape)} does not match images shape {tuple(images.shape)}."
        )
    if not cfg.enabled:
        return images, targets
    n, device = images.shape[0], images.device
    theta = _affine_theta(n, cfg, generator).to(device=device, dtype=images.dtype)
    contrast = _uniform(n, 1.0 - cfg.intensity, 1.0 + cfg.intensity, generator)
    bright = _uniform(n, -cfg.intensity, cfg.intensity, generator)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out * contrast.to(device, images.dtype).view(n, 1, 1, 1) + bright.to(device, images.dtype).view(
        n, 1, 1, 1
    )
    if targets.dim() == 3:
        warped = F.grid_sample(
            targets[:, None].to(images.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )
        return out, warped[:, 0].round().to(targets.dtype)
    soft = F.grid_sample(
        targets.to(images.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    soft[:, 0] += (1.0 - soft.sum(1)).clamp_min(0.0)
    return out, soft.to(targets.dtype)
