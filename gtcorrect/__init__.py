"""G-T correcting: segmentation training under noisy annotations (Gao et al., MBEC 2024).

The engine as a library: ``fit`` trains any method of ``TrainConfig.method`` and returns a
``FitResult`` (clean probabilities, flags, GMM rounds, corrected masks, the model bundle).
The names below are imported on first use, so that ``gtcorrect.client`` and the command line's help
start without loading torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gtcorrect.checkpoint import Checkpoint
    from gtcorrect.config import TrainConfig
    from gtcorrect.errors import CheckpointError, GtcorrectError, InvalidTrainingInput, TrainingStopped
    from gtcorrect.trainer import fit
    from gtcorrect.types import FitResult, LabelMap, Progress, TrainingData

_HOMES = {
    "Checkpoint": "gtcorrect.checkpoint",
    "CheckpointError": "gtcorrect.errors",
    "FitResult": "gtcorrect.types",
    "GtcorrectError": "gtcorrect.errors",
    "InvalidTrainingInput": "gtcorrect.errors",
    "LabelMap": "gtcorrect.types",
    "Progress": "gtcorrect.types",
    "TrainConfig": "gtcorrect.config",
    "TrainingData": "gtcorrect.types",
    "TrainingStopped": "gtcorrect.errors",
    "fit": "gtcorrect.trainer",
}
__all__ = [
    "Checkpoint",
    "CheckpointError",
    "FitResult",
    "GtcorrectError",
    "InvalidTrainingInput",
    "LabelMap",
    "Progress",
    "TrainConfig",
    "TrainingData",
    "TrainingStopped",
    "fit",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'gtcorrect' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
