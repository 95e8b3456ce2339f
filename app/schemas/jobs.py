"""Training jobs."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.db.models import JobStatus, TrainingJob
from app.schemas.common import UtcDateTime

MAX_BATCH_IDS = 1000  # more batches than any dataset needs; keeps the SQL IN list within bounds


class JobCreate(BaseModel):
    """Start training. ``batch_ids`` null = the latest annotation of each sample; ``config`` is a partial
    ``TrainConfig`` (unknown or invalid fields are a 422 naming the field)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "6f1c0a9e-3f0e-4a59-9d55-5b0a3c1d2e4f",
                    "batch_ids": None,
                    "config": {"method": "gt", "image_size": 128, "g": {"warmup_epochs": 10}},
                }
            ]
        }
    )

    dataset_id: uuid.UUID
    batch_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_BATCH_IDS)
    config: dict[str, Any] = Field(default_factory=dict)


class JobOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "1a2b...",
                    "dataset_id": "6f1c...",
                    "status": "running",
                    "phase": "g_round",
                    "epoch": 14,
                    "round": 1,
                    "metrics": {"val_dice": 0.81},
                    "estimated_noise_rate": 0.27,
                    "samples_used": 800,
                    "samples_left_out": 3,
                }
            ]
        }
    )

    id: uuid.UUID
    dataset_id: uuid.UUID
    status: JobStatus
    phase: str | None = None
    epoch: int | None = None
    total_epochs: int | None = None
    round: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    losses: dict[str, Any] = Field(default_factory=dict)
    estimated_noise_rate: float | None = None
    error: str | None = None
    cancel_requested: bool = False
    attempt: int = 0
    batch_ids: list[uuid.UUID] | None = None
    samples_used: int | None = None
    samples_left_out: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    quality: dict[str, Any] | None = Field(
        default=None,
        description="The job's judgement of its own verdicts, set when it succeeds: validation Dice on "
        "held-back samples, noise_evidence, estimated_noise_rate with a bootstrap interval, the "
        "calibration self-test, warnings (code + message) and corrections (applied or withheld, with the "
        "reason). See docs/QUALITY.md.",
    )
    created_at: UtcDateTime
    started_at: UtcDateTime | None = None
    heartbeat_at: UtcDateTime | None = None
    finished_at: UtcDateTime | None = None

    @classmethod
    def from_row(cls, job: TrainingJob) -> JobOut:
        progress = job.progress or {}
        selection = job.batch_ids or {}
        batches = selection.get("batches")
        return cls(
            id=job.id,
            dataset_id=job.dataset_id,
            status=job.status,
            phase=progress.get("phase"),
            epoch=progress.get("epoch"),
            total_epochs=progress.get("total_epochs"),
            round=progress.get("round"),
            metrics=progress.get("metrics") or {},
            losses=progress.get("losses") or {},
            estimated_noise_rate=progress.get("estimated_noise_rate"),
            error=job.error,
            cancel_requested=job.cancel_requested,
            attempt=job.attempt,
            batch_ids=[uuid.UUID(b) for b in batches] if batches is not None else None,
            samples_used=selection.get("samples_used"),
            samples_left_out=selection.get("samples_left_out"),
            config=job.config,
            quality=job.quality,
            created_at=job.created_at,
            started_at=job.started_at,
            heartbeat_at=job.heartbeat_at,
            finished_at=job.finished_at,
        )
