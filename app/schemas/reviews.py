"""Review decisions, bulk rules and curated versions."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat

from app.db.models import ReviewChoice
from app.schemas.common import UtcDateTime


class DecisionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"decision": "accept_correction", "note": "", "reviewer": "dr-lee"}]},
    )

    decision: ReviewChoice = Field(
        description="accept_correction (use the proposed correction), keep_original (the given mask is "
        "right) or needs_reannotation (neither: send the image back to an annotator)."
    )
    note: str = Field("", max_length=2000)
    reviewer: str = Field("", max_length=200, description="Who decided; default: the API key's name.")


class DecisionOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "sample_id": "0b2e4c1d-6f1c-4a9e-8b7e-5b6a1f2e3d4c",
                    "file_name": "cju0qkwl35piu0993l0dewei2.jpg",
                    "decision": "accept_correction",
                    "reviewer": "dr-lee",
                    "note": "",
                    "created_at": "2026-01-02T09:30:00Z",
                    "superseded_at": None,
                }
            ]
        },
    )

    sample_id: uuid.UUID
    file_name: str
    decision: ReviewChoice
    reviewer: str
    note: str
    created_at: UtcDateTime
    superseded_at: UtcDateTime | None = Field(
        None, description="Set when a later decision replaced this one."
    )


class BulkIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"rule": "accept_proposed_above", "min_noise_probability": 0.95, "reviewer": "dr-lee"}
            ]
        },
    )

    rule: Literal["keep_unflagged", "accept_proposed_above"] = Field(
        description="keep_unflagged: keep every unflagged mask; accept_proposed_above: accept every proposed "
        "correction whose mask is noisy with probability >= min_noise_probability. Samples already decided "
        "keep their decision."
    )
    # Strict: true/false is no probability (false was taken as 0 and accepted every proposal).
    min_noise_probability: StrictFloat = Field(0.9, ge=0.0, le=1.0)
    reviewer: str = Field("", max_length=200)


class BulkOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"decided": 412}]})

    decided: int = Field(description="How many undecided samples the rule decided.")


class CuratedIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"undecided": "keep", "annotator": "", "note": "round 2"}]},
    )

    undecided: Literal["keep", "exclude"] = Field(
        "keep", description="keep: undecided samples keep their given mask; exclude: leave them out."
    )
    annotator: str = Field(
        "", max_length=200, description="The batch's annotator (default: 'curated from job ...')."
    )
    note: str = Field("", max_length=2000, description="Stored as the batch's source note.")
    reviewer: str = Field("", max_length=200)
