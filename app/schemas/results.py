"""Results of a succeeded job: noise report rows, GMM round plots, models, segmentation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.common import UtcDateTime


class ClassFitOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    index: int
    name: str
    dice_to_prediction: float = Field(
        description="Dice of this structure in the given mask to the trained network's prediction."
    )


class NoiseFlagOut(BaseModel):
    """One sample's verdict: how likely its annotation is clean, and how much the correction changed."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sample_id": "6f1c...",
                    "file_name": "img01.jpg",
                    "annotation_id": "0b2e...",
                    "clean_probability": 0.08,
                    "flagged": True,
                    "loss": 0.91,
                    "round_decided": 2,
                    "held_out": False,
                    "decided_by": "edge.alignment (low); like the dilation copies",
                    "correction_proposed": True,
                    "changed_fraction": 0.12,
                    "changed_pixels": 4810,
                    "annotator": "vendor-a",
                    "batch_id": "0b2e...",
                    "decision": None,
                }
            ]
        }
    )

    sample_id: uuid.UUID
    file_name: str
    annotation_id: uuid.UUID
    clean_probability: float = Field(
        description="1 - the verdict's probability that the mask is wrong (docs/METHOD.md); flagged when at "
        "most g.tau. Every mask has one, flagged or not: sorted together with loss they rank the masks."
    )
    flagged: bool
    loss: float = Field(
        description="The verdict's score (the detector's log-odds of a wrong mask; with g.detector=loss the "
        "per-sample loss): higher is more doubtful, and it orders masks of equal probability."
    )
    round_decided: int = Field(
        description="The split in which the verdict last changed side; -1: held back, never trained on."
    )
    held_out: bool = Field(
        default=False, description="Held back for validation: never trained on, judged by the final network."
    )
    decided_by: str | None = Field(
        default=None,
        description="The evidence that raised the mask's doubt most and the kind of corrupted copy the "
        "mask looks like (e.g. 'edge.alignment (low); like the dilation copies', 'shape.coarseness "
        "(coarse); like the polygon copies'), or 'annotator outline offset'; 'held back' for held-back "
        "masks.",
    )
    correction_proposed: bool = Field(
        default=False, description="The correction gate proposes a corrected mask for this sample."
    )
    changed_fraction: float | None = Field(
        default=None, description="Share of the mask's pixels the proposed correction changes."
    )
    changed_pixels: int | None = Field(
        default=None, description="Pixels the proposed correction changes, at the original size."
    )
    annotator: str = Field(description="Who drew the mask (its annotation batch's annotator).")
    batch_id: uuid.UUID = Field(description="The annotation batch the mask came from.")
    decision: str | None = Field(
        default=None,
        description="The current review decision, if any (PUT /v1/jobs/{id}/decisions/{sample}).",
    )
    worst_class: str | None = Field(
        default=None,
        description="Label maps of several structures: the structure that looks most wrong, whose given "
        "outline agrees least with the network's prediction.",
    )
    worst_class_dice: float | None = Field(
        default=None, description="That structure's Dice to the prediction."
    )
    classes: list[ClassFitOut] = Field(
        default_factory=list,
        description="Label maps of several structures: each structure's Dice of the given mask to the "
        "prediction (structures neither has are left out).",
    )
    withheld_because: str | None = Field(
        default=None,
        description="A flagged mask whose correction the gate did not propose: why (the first per-mask "
        "check it failed, e.g. 'masks of this size are flagged beyond the noise rate: the network may "
        "fail here', or 'the job withheld every correction': the job's quality says why). None otherwise.",
    )


class AnnotatorOut(BaseModel):
    """One annotator's masks in a job, against the job's model (see docs/ANNOTATORS.md)."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "annotator": "vendor-b",
                    "n_masks": 212,
                    "n_flagged": 180,
                    "dice_vs_model": 0.81,
                    "area_ratio": 1.32,
                    "offset_px": 3.1,
                    "offset_spread_px": 1.4,
                    "relative_offset_px": 4.8,
                    "edge_alignment": 1.05,
                    "suspect": True,
                    "verdict": "outlines 4.8 px wider than the other annotators on average (212 masks); "
                    "follows the image's edges less than they do (alignment 1.05 vs 1.46)",
                }
            ]
        },
    )

    annotator: str
    n_masks: int
    n_flagged: int
    dice_vs_model: float | None = Field(
        description="Mean Dice of the annotator's masks with the model's prediction."
    )
    area_ratio: float | None = Field(description="Median mask area over the predicted area.")
    offset_px: float | None = Field(
        description="Mean signed distance of the outlines from the model's, in pixels of the original images "
        "(+: wider, -: narrower)."
    )
    offset_spread_px: float | None = Field(description="Standard deviation of the per-mask offsets.")
    relative_offset_px: float | None = Field(
        description="offset_px minus the other annotators' mean offset; null with a single annotator."
    )
    edge_alignment: float | None = Field(
        description="How closely the outlines follow the image's edges (1: no closer than nearby pixels)."
    )
    suspect: bool = Field(
        description="A consistent offset, and with several annotators outlines that follow the edges less."
    )
    verdict: str


class DatasetAnnotatorOut(BaseModel):
    """One annotator of a dataset: what they uploaded, and their row of the annotator report of the
    dataset's latest succeeded job that trained on their masks (``report`` null otherwise)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "annotator": "vendor-b",
                    "n_batches": 2,
                    "n_masks": 212,
                    "last_upload_at": "2026-12-01T09:30:00Z",
                    "job_id": "1a2b...",
                    "report": AnnotatorOut.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
                }
            ]
        }
    )

    annotator: str
    n_batches: int = Field(description="Annotation batches uploaded under this name.")
    n_masks: int = Field(description="Masks in those batches.")
    last_upload_at: UtcDateTime
    job_id: uuid.UUID | None = Field(description="The job whose annotator report `report` is.")
    report: AnnotatorOut | None


class GmmRoundOut(BaseModel):
    """One GMM fit of a job on the normalised scores (0 = lowest score, 1 = highest)."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "round": 1,
                    "separation": 2.05,
                    "mean_clean": -1.2,
                    "mean_noisy": 0.4,
                    "var_clean": 0.1,
                    "var_noisy": 0.3,
                    "weight_clean": 0.58,
                    "weight_noisy": 0.42,
                    "threshold": -0.35,
                    "n_flagged": 294,
                    "n_changed": 31,
                    "applied": True,
                }
            ]
        },
    )

    round: int
    separation: float = Field(description="(mean_noisy - mean_clean) / sqrt(var_clean + var_noisy).")
    mean_clean: float
    mean_noisy: float
    var_clean: float
    var_noisy: float
    weight_clean: float
    weight_noisy: float
    threshold: float = Field(description="A mask is flagged when its clean probability is at or below this.")
    n_flagged: int
    n_changed: int = Field(description="Masks that changed side since the previous round.")
    applied: bool = Field(description="False: the fit showed no two groups and changed nothing.")


class PlotOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"round": 1, "url": "/v1/jobs/0b2e4c1d-6f1c-4a9e-8b7e-5b6a1f2e3d4c/plots/gmm-rounds/1.png"}
            ]
        }
    )

    round: int
    url: str = Field(examples=["/v1/jobs/1a2b.../plots/gmm-rounds/0.png"])


class ModelOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "9a7e1f2e-3d4c-4b6a-8f1c-2a9e0b2e4c1d",
                    "dataset_id": "6f1c2a9e-0b2e-4c1d-9a7e-1f2e3d4c5b6a",
                    "job_id": "0b2e4c1d-6f1c-4a9e-8b7e-5b6a1f2e3d4c",
                    "version": 3,
                    "metrics": {"val_dice": 0.81},
                    "created_at": "2026-01-01T12:00:00Z",
                }
            ]
        },
    )

    id: uuid.UUID
    dataset_id: uuid.UUID
    job_id: uuid.UUID
    version: int
    metrics: dict[str, Any]
    validation: dict[str, Any] | None = Field(
        default=None,
        description="How good the model is on your data before you use it: Dice on the job's held-back "
        "samples against their given masks (a lower bound when masks are noisy), overall and per class, with "
        "how many samples. Null for a job too small to hold any back.",
    )
    created_at: datetime

    @model_validator(mode="after")
    def _validation_from_metrics(self) -> ModelOut:
        if self.validation is None and isinstance(self.metrics.get("validation"), dict):
            self.validation = self.metrics["validation"]
        return self


class ClassSegmentation(BaseModel):
    index: int
    name: str
    area: int = Field(description="Pixels of this class at the original size.")
    rle: Any = Field(description="Run-length encoding of the class mask (gtcorrect.export.mask_to_rle).")


class SegmentationOut(BaseModel):
    """``?format=json`` answer of ``/segment``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_id": "9c8d...",
                    "width": 640,
                    "height": 480,
                    "mean_confidence": 0.93,
                    "classes": [{"index": 1, "name": "polyp", "area": 5120, "rle": {"counts": [0, 5]}}],
                }
            ]
        }
    )

    model_id: uuid.UUID
    width: int
    height: int
    mean_confidence: float
    classes: list[ClassSegmentation]


class VolumeVerdictOut(BaseModel):
    """A job's verdict on one NIfTI volume, from its slices' verdicts."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "volume": "hippocampus_001",
                    "volume_id": "5b8cf2c0-bbb1-4e1f-ba80-9828ec9a99a0",
                    "file_name": "hippocampus_001.nii.gz",
                    "slices": 35,
                    "flagged": True,
                    "noise_probability": 0.91,
                    "flagged_slices": [12, 11],
                    "corrected_slices": [11, 12],
                    "slice_sample_ids": ["0b2e4c1d-6f1c-4a9e-8b7e-5b6a1f2e3d4c"],
                }
            ]
        }
    )

    volume: str = Field(description="The volume's name (its file name without .nii.gz).")
    volume_id: uuid.UUID
    file_name: str
    slices: int = Field(description="Slices of the volume the job trained on or held back.")
    flagged: bool = Field(description="True when any of its slices is flagged.")
    noise_probability: float = Field(description="The highest of its slices' probabilities of a wrong mask.")
    flagged_slices: list[int] = Field(description="Indices of the flagged slices, most doubtful first.")
    corrected_slices: list[int] = Field(description="Slices with a proposed correction, in order.")
    slice_sample_ids: list[uuid.UUID] = Field(
        description="The samples of its slices in slice order (slice k: the k-th); their overlays, masks "
        "and noise-report rows are the samples'."
    )
