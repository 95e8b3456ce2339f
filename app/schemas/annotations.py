"""Annotation batches: one upload of masks by one annotator."""

from __future__ import annotations

import uuid
from typing import Any, Literal

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
        description="uploaded (an annotator's masks), curated (a job's masks after review) or consensus "
        "(one mask per sample agreed from several annotators' masks).",
    )
    provenance: dict[str, Any] | None = Field(
        None,
        description="For a curated batch: the job, its decisions, and the batches its masks came from. For a "
        "consensus batch: the method, the source batches, and per annotator their masks, mean Dice against "
        "the consensus on shared samples and (STAPLE) sensitivity and specificity.",
    )
    created_at: UtcDateTime


class ConsensusIn(BaseModel):
    """Which batches to agree, and how."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"batch_ids": None, "method": "staple", "note": "three vendors"}]},
    )

    batch_ids: list[uuid.UUID] | None = Field(
        None, description="Accepted batches to agree (default: every accepted uploaded batch of the dataset)."
    )
    method: Literal["staple", "majority"] = Field(
        "staple",
        description="staple: each annotator's reliability is estimated from all their masks and weighs their "
        "vote (Warfield et al. 2004); majority: one vote each, ties go to background.",
    )
    annotator: str = Field(
        "", max_length=200, description="The batch's annotator (default: 'consensus (method)')."
    )
    note: str = Field("", max_length=2000, description="Stored as the batch's source note.")
