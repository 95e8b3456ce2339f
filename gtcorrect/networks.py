"""The segmentation network: MONAI's 2-D ``UNet`` (Kerfoot et al. residual units), size from ``NetConfig``."""

from __future__ import annotations

from monai.networks.nets import UNet
from torch import nn

from gtcorrect.config import NetConfig


def build_network(net: NetConfig, in_channels: int, num_classes: int) -> nn.Module:
    """Return an untrained UNet mapping (B, in_channels, S, S) to logits (B, num_classes, S, S)."""
    if len(net.strides) != len(net.channels) - 1:
        raise ValueError(
            f"NetConfig needs len(strides) == len(channels) - 1, got {len(net.strides)} strides "
            f"for {len(net.channels)} channels."
        )
    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=net.channels,
        strides=net.strides,
        num_res_units=net.num_res_units,
        dropout=net.dropout,
    )
