"""Training checkpoints: everything ``fit`` needs to resume a run exactly.

A checkpoint is written at the end of every epoch. It holds plain tensors, lists, dicts, numbers and
strings only, so it loads with ``torch.load(weights_only=True)`` (no pickled classes).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gtcorrect.errors import CheckpointError

CHECKPOINT_FORMAT = "gtcorrect-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    """State after ``epoch`` completed global epochs.

    nets/optimizers: name ("student", "teacher", "peer") -> state_dict. engine: the method's state
    (clean probabilities, GMM rounds, scores, early-learning curve and switch, thresholds, corrections,
    ELR memory, ...) as plain data. rng: torch RNG states; every epoch re-derives its generators from
    (seed, epoch), and numpy/scikit-learn randomness from (seed, round), so these are a safety net.
    history: the ``Progress`` events so far, as dicts.
    """

    config_json: str
    epoch: int
    phase: str
    ids: list[str]
    nets: dict[str, dict[str, torch.Tensor]]
    optimizers: dict[str, dict[str, Any]]
    engine: dict[str, Any]
    rng: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config_json": self.config_json,
            "epoch": self.epoch,
            "phase": self.phase,
            "ids": list(self.ids),
            "nets": {k: {n: t.detach().cpu() for n, t in v.items()} for k, v in self.nets.items()},
            "optimizers": self.optimizers,
            "engine": self.engine,
            "rng": self.rng,
            "history": self.history,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt or foreign files
            raise CheckpointError(f"cannot read checkpoint ({len(data)} bytes): {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise CheckpointError(f"not a gtcorrect checkpoint (format={got!r}).")
        if payload.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"unsupported checkpoint version {payload.get('version')!r}.")
        return cls(
            config_json=payload["config_json"],
            epoch=int(payload["epoch"]),
            phase=str(payload["phase"]),
            ids=list(payload["ids"]),
            nets=payload["nets"],
            optimizers=payload["optimizers"],
            engine=payload["engine"],
            rng=payload["rng"],
            history=payload["history"],
        )

    def corrected_masks(self) -> dict[int, np.ndarray]:
        """Corrected masks so far (sample index -> (S, S) int64 or (K, S, S) float32), for persisting
        corrections every epoch; empty before the first correction."""
        return {int(i): unpack_mask(m) for i, m in self.engine.get("corrections", {}).items()}


def pack_mask(mask: np.ndarray) -> torch.Tensor:
    """Hard masks (S, S) int64 travel as uint8 (8x smaller checkpoints); soft (K, S, S) stay float32."""
    if mask.dtype == np.int64 and mask.size and mask.min() >= 0 and mask.max() < 256:
        return torch.tensor(mask.astype(np.uint8))
    return torch.tensor(mask)


def unpack_mask(mask: torch.Tensor) -> np.ndarray:
    """Inverse of ``pack_mask``: uint8 back to int64 class indices."""
    return mask.numpy().astype(np.int64) if mask.dtype == torch.uint8 else mask.numpy()
