"""The self-describing model file: weights plus everything inference needs to use them."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gtcorrect.config import TrainConfig
from gtcorrect.networks import build_network
from gtcorrect.types import LabelMap

FORMAT_VERSION = 1


@dataclass
class ModelBundle:
    """A trained network with its config, label map, input size and normalisation.

    ``normalisation`` names the policy in ``gtcorrect.data.normalise`` ("zscore": per image and
    channel, zero mean and unit variance after scaling to [0, 1]).
    """

    config: TrainConfig
    label_map: LabelMap
    in_channels: int
    state_dict: dict[str, torch.Tensor]
    normalisation: str = "zscore"
    metrics: dict[str, float] | None = None

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        net = build_network(self.config.net, self.in_channels, self.label_map.num_classes)
        net.load_state_dict(self.state_dict)
        return net.to(device).eval()

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(self._payload(), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelBundle:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return cls._from_payload(payload)

    def save(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self.to_bytes())

    @classmethod
    def load(cls, path: str) -> ModelBundle:
        with open(path, "rb") as f:
            return cls.from_bytes(f.read())

    def _payload(self) -> dict[str, Any]:
        return {
            "format": "gtcorrect-model",
            "version": FORMAT_VERSION,
            "config": self.config.to_json(),
            "label_map": list(self.label_map.names),
            "in_channels": self.in_channels,
            "normalisation": self.normalisation,
            "metrics": dict(self.metrics or {}),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
        }

    @classmethod
    def _from_payload(cls, payload: dict[str, Any]) -> ModelBundle:
        if payload.get("format") != "gtcorrect-model":
            raise ValueError(f"not a gtcorrect model file (format={payload.get('format')!r}).")
        if payload.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported model file version {payload.get('version')!r}.")
        return cls(
            config=TrainConfig.from_stored(json.loads(payload["config"])),
            label_map=LabelMap(tuple(payload["label_map"])),
            in_channels=int(payload["in_channels"]),
            state_dict=payload["state_dict"],
            normalisation=payload["normalisation"],
            metrics=payload["metrics"],
        )
