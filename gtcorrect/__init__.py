"""G-T correcting: segmentation training under noisy annotations (Gao et al., MBEC 2024).

The engine as a library: ``fit`` trains any method of ``TrainConfig.method`` and returns a
``FitResult`` (clean probabilities, flags, GMM rounds, corrected masks, the model bundle).
"""

from gtcorrect.checkpoint import Checkpoint
from gtcorrect.config import TrainConfig
from gtcorrect.errors import CheckpointError, GtcorrectError, InvalidTrainingInput, TrainingStopped
from gtcorrect.trainer import fit
from gtcorrect.types import FitResult, LabelMap, Progress, TrainingData

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
