"""Datasets and their samples."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import FileOutcome, UtcDateTime


class DatasetCreate(BaseModel):
    """A dataset: a name unique in the project and the label map (0 = background, no gaps)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "kvasir", "label_map": {"0": "background", "1": "polyp"}}]},
    )

    name: str = Field(min_length=1, max_length=200)
    label_map: dict[str, str] = Field(default_factory=lambda: {"0": "background", "1": "foreground"})
    image_settings: dict[str, Any] = Field(default_factory=dict)


class DatasetRename(BaseModel):
    """A dataset's new name, unique in the project."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "polyps-round-2"}]})

    name: str = Field(min_length=1, max_length=200)


class DatasetOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "6f1c2a9e-0b2e-4c1d-9a7e-1f2e3d4c5b6a",
                    "name": "kvasir-polyps",
                    "label_map": {"0": "background", "1": "polyp"},
                    "image_settings": {},
                    "created_at": "2026-01-01T00:00:00Z",
                    "sample_count": 700,
                }
            ]
        },
    )

    id: uuid.UUID
    name: str
    label_map: dict[str, str]
    image_settings: dict[str, Any]
    created_at: UtcDateTime
    sample_count: int = 0


class SampleOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "0b2e4c1d-6f1c-4a9e-8b7e-5b6a1f2e3d4c",
                    "dataset_id": "6f1c2a9e-0b2e-4c1d-9a7e-1f2e3d4c5b6a",
                    "file_name": "cju0qkwl35piu0993l0dewei2.jpg",
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "width": 622,
                    "height": 529,
                    "channels": 3,
                    "created_at": "2026-01-01T00:00:00Z",
                }
            ]
        },
    )

    id: uuid.UUID
    dataset_id: uuid.UUID
    file_name: str = Field(examples=["img01.jpg"])
    sha256: str
    width: int
    height: int
    channels: int
    volume_id: uuid.UUID | None = Field(default=None, description="A slice of this NIfTI volume.")
    slice_index: int | None = Field(
        default=None, description="The slice's index along the volume's first axis."
    )
    created_at: UtcDateTime


class VolumeOut(BaseModel):
    """A NIfTI image volume: stored as uploaded, trained slice-wise along its first axis (each slice a
    sample named `<volume>_s012.png`)."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "5b8cf2c0-bbb1-4e1f-ba80-9828ec9a99a0",
                    "dataset_id": "6f1c2a9e-0b2e-4c1d-9a7e-1f2e3d4c5b6a",
                    "name": "hippocampus_001",
                    "file_name": "hippocampus_001.nii.gz",
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "shape": [35, 51, 35],
                    "spacing": [1.0, 1.0, 1.0],
                    "slices": 35,
                    "created_at": "2026-01-01T00:00:00Z",
                }
            ]
        },
    )

    id: uuid.UUID
    dataset_id: uuid.UUID
    name: str = Field(examples=["hippocampus_001"])
    file_name: str = Field(examples=["hippocampus_001.nii.gz"])
    sha256: str
    shape: list[int] = Field(description="Voxels along X, Y, Z as stored.", examples=[[35, 51, 35]])
    spacing: list[float] = Field(
        description="Millimetres per voxel along X, Y, Z.", examples=[[1.0, 1.0, 1.0]]
    )
    slices: int = Field(description="How many samples its slices are (the first axis).")
    created_at: UtcDateTime


class ImageUploadOut(BaseModel):
    """Per-file report of an accepted upload (a rejected upload is a 422 problem with ``invalid_files``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "created": 1,
                    "duplicates": 1,
                    "files": [
                        {"file": "a.jpg", "status": "created", "id": "6f1c..."},
                        {"file": "b.jpg", "status": "duplicate", "id": "0b2e...", "reason": "same content"},
                    ],
                }
            ]
        }
    )

    created: int
    duplicates: int
    files: list[FileOutcome]


class NnUNetImportOut(BaseModel):
    """What an nnU-Net v2 import created: the dataset (dataset.json's label map, one sample per training
    case) and the accepted annotation batch of its labelsTr masks."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "dataset": {
                        "id": "6f1c2a9e-0b2e-4c1d-9a7e-1f2e3d4c5b6a",
                        "name": "Dataset004_Hippocampus",
                        "label_map": {"0": "background", "1": "Anterior", "2": "Posterior"},
                        "image_settings": {},
                        "created_at": "2026-01-01T00:00:00Z",
                        "sample_count": 260,
                    },
                    "batch_id": "0b2e4c1d-6f1c-4a9e-8b7e-5b6a1f2e3d4c",
                    "samples": 260,
                    "masks": 260,
                    "test_images_left_out": 130,
                    "ignored_files": ["Dataset004_Hippocampus/README.md"],
                }
            ]
        }
    )

    dataset: DatasetOut
    batch_id: uuid.UUID
    samples: int = Field(description="Training cases imported, one sample each (`{case}.png`).")
    masks: int = Field(description="labelsTr masks in the batch (one per sample).")
    test_images_left_out: int = Field(description="imagesTs files: nnU-Net's test images, not imported.")
    ignored_files: list[str] = Field(description="Archive entries that belong to no training case.")
