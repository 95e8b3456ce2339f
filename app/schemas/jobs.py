"""Training jobs."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.db.models import JobPhase, JobStatus, TrainingJob
from app.schemas.common import UtcDateTime

MAX_BATCH_IDS = 1000  # more batches than any dataset needs; keeps the SQL IN list within bounds


class JobCreate(BaseModel):
    """Start training. ``batch_ids`` null = the latest annotation of each sample; ``config`` is a partial
    ``TrainConfig`` (unknown or invalid fields are a 422 naming the field), applied on top of ``preset``."""

    # A mistyped field ("confg", "presett") is a 422 naming it, not a job trained on the defaults.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "6f1c0a9e-3f0e-4a59-9d55-5b0a3c1d2e4f",
                    "batch_ids": None,
                    "preset": "quick",
                    "config": {"image_size": 128, "g": {"warmup_epochs": 10}},
                }
            ]
        },
    )

    dataset_id: uuid.UUID
    batch_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_BATCH_IDS)
    consensus: Literal["staple", "majority"] | None = Field(
        default=None,
        description="Train on a consensus of several annotators' masks instead of the latest mask of each "
        "sample: the job first agrees one mask per sample from `batch_ids` (default: every uploaded "
        "batch) as a new consensus batch, as POST .../annotation-batches/consensus does, and trains on "
        "it (the job's `batch_ids` name that batch).",
    )
    train_on: Literal["consensus", "every_reader"] = Field(
        default="consensus",
        description="With `consensus`: what the network learns from. `consensus`: the agreed masks. "
        "`every_reader`: every annotator's own mask of each sample, one drawn per sample and epoch with a "
        "probability proportional to the annotator's weight (their mean Dice against the consensus), so "
        "training sees how far the readers differ; the consensus stays what the job judges, flags and "
        "corrects. Samples outlined by one annotator are learnt from that mask either way.",
    )
    preset: str | None = Field(
        default=None,
        description="A named starting point (GET /v1/config/presets: quick, standard, benchmark, paper); "
        "`config` is applied on top of it. Null: the defaults.",
        examples=["quick"],
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="A partial TrainConfig (schema TrainConfig: every field, its default and bounds); "
        "omitted fields keep the preset's or the default value.",
    )


class PresetOut(BaseModel):
    """A named starting point for a job's config."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "quick",
                    "description": "A first look in minutes on a CPU: 64 px, ...",
                    "config": {"image_size": 64, "t": {"epochs": 4}},
                    "epochs": 14,
                }
            ]
        }
    )

    name: str
    description: str
    config: dict[str, Any] = Field(description="The partial TrainConfig the preset sets.")
    epochs: int = Field(description="The most epochs a job of this preset trains (G-T: every round run).")


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
    phase: JobPhase | None = Field(
        default=None,
        description="Where the job is, in order: queued, fetching_inputs, preparing, then the training "
        "phases (G-T: warmup, g_round, t_early, t_correct; other methods: train), assessing, "
        "storing_results, done. A failed or cancelled job keeps the phase it stopped in.",
    )
    epoch: int | None = Field(default=None, description="Epochs trained so far (null before the first).")
    total_epochs: int | None = Field(
        default=None,
        description="Epochs the job trains, exact from the start. For G-T, when the G stage's feedback "
        "rounds stop early (once few masks change side), the T stage trains the epochs they left "
        "(config t.fill_schedule; with it false, an upper bound until the G stage ends).",
    )
    round: int | None = Field(
        default=None, description="The GMM round (0: after warm-up) split in the latest epoch, else null."
    )
    eta_seconds: float | None = Field(
        default=None,
        description="Seconds of training left at this attempt's mean epoch time (total_epochs - epoch "
        "epochs; the assessment and storing the results come on top). Null unless training.",
    )
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Set when the job succeeds: validation Dice and counts."
    )
    losses: dict[str, Any] = Field(
        default_factory=dict,
        description="The latest epoch's mean training losses by term (train, clean, flagged, consistency; "
        "elr with t.elr). The elr term is lambda * log(1 - <p, target>), below zero by construction.",
    )
    estimated_noise_rate: float | None = None
    error: str | None = None
    cancel_requested: bool = False
    attempt: int = 0
    batch_ids: list[uuid.UUID] | None = None
    samples_used: int | None = None
    samples_left_out: int | None = None
    preset: str | None = Field(default=None, description="The preset the job's config started from, if any.")
    train_on: Literal["consensus", "every_reader"] | None = Field(
        default=None,
        description="For a job on a consensus: whether it learns from the agreed masks or from every "
        "reader's (JobCreate.train_on). Null for other jobs.",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="What the job made of its input that you might not expect, in words: e.g. samples with "
        "masks in several of the chosen batches, of which it trains on one.",
    )
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
            eta_seconds=_eta(job.status, progress),
            metrics=progress.get("metrics") or {},
            losses=progress.get("losses") or {},
            estimated_noise_rate=progress.get("estimated_noise_rate"),
            error=job.error,
            cancel_requested=job.cancel_requested,
            attempt=job.attempt,
            batch_ids=[uuid.UUID(b) for b in batches] if batches is not None else None,
            samples_used=selection.get("samples_used"),
            samples_left_out=selection.get("samples_left_out"),
            preset=selection.get("preset"),
            train_on=selection.get("train_on"),
            notes=list(selection.get("notes") or []),
            config=job.config,
            quality=job.quality,
            created_at=job.created_at,
            started_at=job.started_at,
            heartbeat_at=job.heartbeat_at,
            finished_at=job.finished_at,
        )


TRAINING_PHASES = frozenset(
    {JobPhase.warmup, JobPhase.g_round, JobPhase.t_early, JobPhase.t_correct, JobPhase.train}
)


def _eta(status: JobStatus, progress: dict[str, Any]) -> float | None:
    per_epoch, epoch, total = (progress.get(k) for k in ("seconds_per_epoch", "epoch", "total_epochs"))
    if status != JobStatus.running or progress.get("phase") not in TRAINING_PHASES:
        return None
    if per_epoch is None or epoch is None or total is None:
        return None
    return round(float(per_epoch) * max(int(total) - int(epoch), 0), 1)
