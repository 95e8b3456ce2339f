"""Results of a succeeded job: noise report rows, GMM round plots, models, segmentation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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
                    "changed_fraction": 0.12,
                }
            ]
        }
    )

    sample_id: uuid.UUID
    file_name: str
    annotation_id: uuid.UUID
    clean_probability: float
    flagged: bool
    loss: float
    round_decided: int
    changed_fraction: float | None = None


class PlotOut(BaseModel):
    round: int
    url: str = Field(examples=["/v1/jobs/1a2b.../plots/gmm-rounds/0.png"])


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    dataset_id: uuid.UUID
    job_id: uuid.UUID
    version: int
    metrics: dict[str, Any]
    created_at: datetime


class ClassSegmentation(BaseModel):
    index: int
    name: str
    area: int = Field(description="Pixels of this class at the original size.")
    rle: Any = Field(description="Run-length encoding of the class mask (gtcorrect.inference.mask_to_rle).")


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
