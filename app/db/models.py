"""SQLAlchemy 2 models: the data model of docs/ARCHITECTURE.md. Migrations in ``migrations/`` mirror it.

All ids are UUIDs, all times timezone-aware UTC. Types are portable so the embedded mode runs the same
models on SQLite.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored timestamp as an aware UTC datetime (SQLite hands back naive ones; all are UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",  # all columns: two uniques may share a first one
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {
        dict[str, Any]: JSON,
        datetime: DateTime(timezone=True),
        uuid.UUID: Uuid,
    }


class BatchStatus(enum.StrEnum):
    validating = "validating"
    accepted = "accepted"
    rejected = "rejected"


class BatchKind(enum.StrEnum):
    uploaded = "uploaded"  # masks an annotator drew
    curated = "curated"  # a job's masks after review: corrections accepted, originals kept (provenance)
    consensus = "consensus"  # one mask per sample agreed from several annotators' masks (provenance)


class ReviewChoice(enum.StrEnum):
    accept_correction = "accept_correction"
    keep_original = "keep_original"
    needs_reannotation = "needs_reannotation"


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class JobPhase(enum.StrEnum):
    """Where a job is, in order (``progress.phase``); a failed or cancelled job keeps the phase it
    stopped in. G-T trains warmup, g_round, t_early, t_correct; the other methods train "train"."""

    queued = "queued"  # waiting for a worker
    fetching_inputs = "fetching_inputs"  # reading the images and masks, resizing them to image_size
    preparing = "preparing"  # building the network, loading the checkpoint of a resumed job
    warmup = "warmup"  # G stage: every mask, before the first GMM split
    g_round = "g_round"  # G stage: positive-feedback rounds on the clean set
    t_early = "t_early"  # T stage, early learning: flagged masks learnt as given
    t_correct = "t_correct"  # T stage: flagged masks learnt from their confident corrections
    train = "train"  # plain training (methods noisy, clean, gmm_select, coteaching)
    assessing = "assessing"  # the final split, the held-back validation and the self-test
    storing_results = "storing_results"  # corrected masks, plots, model and verdicts written
    done = "done"


def _pk() -> Mapped[uuid.UUID]:
    return mapped_column(primary_key=True, default=uuid.uuid4)


def _created() -> Mapped[datetime]:
    return mapped_column(default=utcnow)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[uuid.UUID] = _pk()
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = _created()


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[uuid.UUID] = _pk()
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)  # first characters, for lookup
    key_hash: Mapped[str] = mapped_column(String(128))  # sha256 of the whole key; the key is shown once
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # Who issued and who revoked the key (an operator at the CLI, or another key of the project), and why.
    created_by: Mapped[str] = mapped_column(String(200), default="", server_default="")
    revoked_by: Mapped[str | None] = mapped_column(String(200), default=None)
    revoke_note: Mapped[str | None] = mapped_column(String(2000), default=None)
    # Loaded with the key when authenticating (projects.authenticate_key, key_by_id); never lazily.
    project: Mapped[Project] = relationship(lazy="raise")


class EndedSession(Base):
    """A browser session signed out before its cookie expired: the cookie stays valid by signature, so
    the server remembers its nonce until the expiry (app.services.keys.end_session)."""

    __tablename__ = "ended_sessions"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[uuid.UUID] = _pk()
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    label_map: Mapped[dict[str, Any]] = mapped_column()  # {"0": "background", "1": "polyp", ...}
    image_settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = _created()
    samples: Mapped[list[Sample]] = relationship(back_populates="dataset", cascade="all, delete-orphan")


class Volume(Base):
    """A 3D NIfTI image volume, stored as uploaded (its header: affine, spacing) and trained slice-wise:
    its slices along ``gtcorrect.volumes.SLICE_AXIS`` are samples (``Sample.volume_id``)."""

    __tablename__ = "volumes"
    __table_args__ = (UniqueConstraint("dataset_id", "sha256"), UniqueConstraint("dataset_id", "name"))
    id: Mapped[uuid.UUID] = _pk()
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(500))  # the file name without .nii.gz / .nii
    file_name: Mapped[str] = mapped_column(String(500))
    object_key: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))  # of the file as uploaded
    shape: Mapped[list[int]] = mapped_column(JSON)  # voxels (X, Y, Z) as stored
    spacing: Mapped[list[float]] = mapped_column(JSON)  # mm per voxel along X, Y, Z (the header's zooms)
    created_at: Mapped[datetime] = _created()

    @property
    def slices(self) -> int:
        """How many samples its slices are: along the first axis (gtcorrect.volumes.SLICE_AXIS)."""
        return int(self.shape[0])


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("dataset_id", "sha256"), UniqueConstraint("dataset_id", "file_name"))
    id: Mapped[uuid.UUID] = _pk()
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    object_key: Mapped[str] = mapped_column(String(500))
    # Of the stored image; for a volume's slice, of its volume's hash and its index (two slices alike in
    # different volumes, or in one, are different samples).
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer, default=3)
    file_name: Mapped[str] = mapped_column(String(500))
    # A slice of a volume: the volume, and the slice's index along gtcorrect.volumes.SLICE_AXIS.
    volume_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("volumes.id", ondelete="CASCADE"), index=True, default=None
    )
    slice_index: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = _created()
    dataset: Mapped[Dataset] = relationship(back_populates="samples")


class AnnotationBatch(Base):
    __tablename__ = "annotation_batches"
    id: Mapped[uuid.UUID] = _pk()
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    annotator: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[BatchStatus] = mapped_column(Enum(BatchStatus, name="batch_status"))
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    kind: Mapped[BatchKind] = mapped_column(
        Enum(BatchKind, name="batch_kind"), default=BatchKind.uploaded, server_default="uploaded"
    )
    # For a curated batch: the job, its decisions and the batches its masks came from.
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = _created()


class Annotation(Base):
    """One mask version. Never overwritten: a new batch adds a new row."""

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("batch_id", "sample_id"),)
    id: Mapped[uuid.UUID] = _pk()
    sample_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("annotation_batches.id", ondelete="CASCADE"), index=True
    )
    object_key: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()


class TrainingJob(Base):
    __tablename__ = "training_jobs"
    id: Mapped[uuid.UUID] = _pk()
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    batch_ids: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"batches": [...]} or {"latest": true}
    config: Mapped[dict[str, Any]] = mapped_column()  # gtcorrect.TrainConfig.to_dict()
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, name="job_status"), index=True)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)  # phase, epoch, round, metrics, noise rate
    # The job's judgement of itself (gtcorrect.quality.Quality.to_dict()), set when it succeeds.
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    checkpoint_key: Mapped[str | None] = mapped_column(String(500), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class NoiseFlag(Base):
    __tablename__ = "noise_flags"
    __table_args__ = (UniqueConstraint("job_id", "sample_id"),)
    id: Mapped[uuid.UUID] = _pk()
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True)
    sample_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    annotation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("annotations.id", ondelete="CASCADE"))
    clean_probability: Mapped[float] = mapped_column(Float, index=True)
    flagged: Mapped[bool] = mapped_column(Boolean)
    loss: Mapped[float] = mapped_column(Float)
    round_decided: Mapped[int] = mapped_column(Integer)  # -1: held back for validation, never trained on
    held_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    # The evidence that raised the mask's doubt most (gtcorrect.verdict); None in jobs before 2026-12-06.
    decided_by: Mapped[str | None] = mapped_column(String(64), default=None)
    # Why the flagged mask's correction was not proposed (the gate's first failed check); None where it
    # was, where nothing was flagged, and in jobs before 2026-12-07.
    withheld_because: Mapped[str | None] = mapped_column(String(160), default=None)
    # Per foreground class (index k - 1 for class k): Dice of the given mask to the network's prediction,
    # None where neither has the class; None in jobs before 2026-12-06.
    class_dice: Mapped[list[float | None] | None] = mapped_column(JSON, default=None)


class CorrectedMask(Base):
    __tablename__ = "corrected_masks"
    __table_args__ = (UniqueConstraint("job_id", "sample_id"),)
    id: Mapped[uuid.UUID] = _pk()
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True)
    sample_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    object_key: Mapped[str] = mapped_column(String(500))
    changed_fraction: Mapped[float] = mapped_column(Float)
    changed_pixels: Mapped[int | None] = mapped_column(Integer, default=None)  # at the original size


class ReviewDecision(Base):
    """A reviewer's decision on one mask of a job. A new decision supersedes the current one (which
    keeps its row, with ``superseded_at`` set): the history stays."""

    __tablename__ = "review_decisions"
    __table_args__ = (
        Index(
            "uq_review_decisions_current",
            "job_id",
            "sample_id",
            unique=True,
            postgresql_where=text("superseded_at IS NULL"),
            sqlite_where=text("superseded_at IS NULL"),
        ),
    )
    id: Mapped[uuid.UUID] = _pk()
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True)
    sample_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    decision: Mapped[ReviewChoice] = mapped_column(Enum(ReviewChoice, name="review_choice"))
    reviewer: Mapped[str] = mapped_column(String(200), default="")
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), default=None
    )
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = _created()
    superseded_at: Mapped[datetime | None] = mapped_column(default=None)


class AnnotatorStat(Base):
    """One annotator's masks in one job, against the job's model (``gtcorrect.annotators``)."""

    __tablename__ = "annotator_stats"
    __table_args__ = (UniqueConstraint("job_id", "annotator"),)
    id: Mapped[uuid.UUID] = _pk()
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True)
    annotator: Mapped[str] = mapped_column(String(200))
    n_masks: Mapped[int] = mapped_column(Integer)
    n_flagged: Mapped[int] = mapped_column(Integer)
    dice_vs_model: Mapped[float | None] = mapped_column(Float)
    area_ratio: Mapped[float | None] = mapped_column(Float)
    offset_px: Mapped[float | None] = mapped_column(Float)  # + : outlines outside the model's (wider)
    offset_spread_px: Mapped[float | None] = mapped_column(Float)
    relative_offset_px: Mapped[float | None] = mapped_column(Float)  # against the other annotators
    edge_alignment: Mapped[float | None] = mapped_column(Float)
    suspect: Mapped[bool] = mapped_column(Boolean)
    verdict: Mapped[str] = mapped_column(Text)


class GmmRound(Base):
    """One GMM fit of a job (G-stage rounds, the final split): what the histogram plots show, as data."""

    __tablename__ = "gmm_rounds"
    __table_args__ = (UniqueConstraint("job_id", "round"),)
    id: Mapped[uuid.UUID] = _pk()
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    separation: Mapped[float] = mapped_column(Float)
    mean_clean: Mapped[float] = mapped_column(Float)
    mean_noisy: Mapped[float] = mapped_column(Float)
    var_clean: Mapped[float] = mapped_column(Float)
    var_noisy: Mapped[float] = mapped_column(Float)
    weight_clean: Mapped[float] = mapped_column(Float)
    weight_noisy: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)  # clean probability at or below which a mask is flagged
    n_flagged: Mapped[int] = mapped_column(Integer)
    n_changed: Mapped[int] = mapped_column(Integer)
    applied: Mapped[bool] = mapped_column(Boolean)  # False: no two groups, the fit changed nothing


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)
    id: Mapped[uuid.UUID] = _pk()
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"), unique=True)
    weights_key: Mapped[str] = mapped_column(String(500))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created()
