"""Datasets and their samples."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import FileOutcome, UtcDateTime


class DatasetCreate(BaseModel):
    """A dataset: a name unique in the project and the label map (0 = background, no gaps)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "kvasir", "label_map": {"0": "background", "1": "polyp"}}]}
    )

    name: str = Field(min_length=1, max_length=200)
    label_map: dict[str, str] = Field(default_factory=lambda: {"0": "background", "1": "foreground"})
    image_settings: dict[str, Any] = Field(default_factory=dict)


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    label_map: dict[str, str]
    image_settings: dict[str, Any]
    created_at: UtcDateTime
    sample_count: int = 0


class SampleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    dataset_id: uuid.UUID
    file_name: str = Field(examples=["img01.jpg"])
    sha256: str
    width: int
    height: int
    channels: int
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
