"""The segmentation network: MONAI's ``UNet`` (Kerfoot et al. residual units), size from ``NetConfig``. The
engine trains it 2-D; ``spatial_dims=3`` builds the same network for whole volumes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.networks.nets import UNet
from torch import nn

from gtcorrect.config import NetConfig


def build_network(net: NetConfig, in_channels: int, num_classes: int, spatial_dims: int = 2) -> nn.Module:
    """Return an untrained UNet mapping (B, in_channels, S, S) to logits (B, num_classes, S, S); with
    ``spatial_dims=3`` volumes (B, in_channels, X, Y, Z) to (B, num_classes, X, Y, Z)."""
    if len(net.strides) != len(net.channels) - 1:
        raise ValueError(
            f"NetConfig needs len(strides) == len(channels) - 1, got {len(net.strides)} strides "
            f"for {len(net.channels)} channels."
        )
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=net.channels,
        strides=net.strides,
        num_res_units=net.num_res_units,
        dropout=net.dropout,
    )


# The views of an image at test time, as the tensor dims flipped: itself, its horizontal, vertical and double
# flips (the flips training augments with).
VIEWS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def view_probs(
    net: nn.Module, x: torch.Tensor, views: int = 1, flips: Sequence[tuple[int, ...]] = VIEWS
) -> torch.Tensor:
    """Softmax probabilities (B, K, ...) of ``net`` on inputs (B, C, ...): the mean over the first
    ``views`` of ``flips`` (default ``VIEWS``, images (B, C, S, S); a volume's mirrorings for a 3D network),
    each view's probabilities flipped back."""
    chosen = flips[: max(1, min(views, len(flips)))]
    total = torch.zeros(0)
    for dims in chosen:
        p = torch.softmax(net(x.flip(dims) if dims else x).float(), 1)
        p = p.flip(dims) if dims else p
        total = p if total.numel() == 0 else total + p
    return total / len(chosen)


def use_amp(setting: str, device: torch.device) -> bool:
    """Whether a network on ``device`` runs in bfloat16 mixed precision: ``TrainConfig.amp`` "on", or
    "auto" on a CUDA device that supports bfloat16 (no loss scaling is needed with it)."""
    if setting != "auto":
        return setting == "on"
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def mixed_precision(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` with its forward pass under bfloat16 autocast, returning float32 logits (so losses and
    probabilities are computed in float32), and on CUDA in channels-last memory format. The weights stay
    float32 and their names unchanged: checkpoints and model files are the same with and without it."""
    forward: Callable[..., torch.Tensor] = net.forward

    def autocast_forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return forward(*args, **kwargs).float()

    net.forward = autocast_forward
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return net
