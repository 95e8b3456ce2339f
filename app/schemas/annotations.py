"""Annotation batches: one upload of masks by one annotator."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.db.models import BatchKind, BatchStatus
from app.schemas.common import UtcDateTime


class BatchOut(BaseModel):
    """An accepted batch; ``report`` lists each mask file and the sample it was matched to."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "0b2e...",
                    "dataset_id": "6f1c...",
                    "annotator": "vendor-a",
                    "source": "round 1",
                    "status": "accepted",
                    "report": {"accepted": 1, "files": [{"file": "img01.png", "sample": "img01.jpg"}]},
                    "created_at": "2026-01-01T00:00:00Z",
                }
            ]
        },
    )

    id: uuid.UUID
    dataset_id: uuid.UUID
    annotator: str
    source: str
    status: BatchStatus
    report: dict[str, Any] = Field(default_factory=dict)
    kind: BatchKind = Field(
        BatchKind.uploaded,
        description="uploaded (an annotator's masks) or curated (a job's masks after review).",
    )
    provenance: dict[str, Any] | None = Field(
        None, description="For a curated batch: the job, its decisions, and the batches its masks came from."
    )
    created_at: UtcDateTime
