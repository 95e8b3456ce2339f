"""Typed errors of the training engine; messages name the offending value or file."""

from __future__ import annotations


class GtcorrectError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidTrainingInput(GtcorrectError, ValueError):
    """The data or configuration cannot be trained on (message names the value)."""


class CheckpointError(GtcorrectError, ValueError):
    """A checkpoint is unreadable or does not belong to this configuration and data."""


class TrainingStopped(GtcorrectError):
    """``should_stop()`` returned True; the last delivered checkpoint is the one to resume from.

    ``epoch`` is the global epoch (1-based) that was interrupted; the checkpoint of ``epoch - 1``
    (if any) holds the complete state.
    """

    def __init__(self, epoch: int) -> None:
        super().__init__(f"training stopped on request during epoch {epoch}.")
        self.epoch = epoch


class ConfigError(InvalidTrainingInput):
    """A configuration value has the wrong type or lies out of bounds; ``field`` is its dotted path
    (``t.epochs``, ``net.channels``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message
