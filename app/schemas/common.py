"""Shared response shapes: pages of items, per-file upload outcomes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.db.models import as_utc

T = TypeVar("T")

# Every time the API answers is RFC 3339 with its zone: SQLite (the embedded mode) hands back naive UTC.
UtcDateTime = Annotated[datetime, AfterValidator(as_utc)]


class Page(BaseModel, Generic[T]):
    """One page of a list; ``total`` counts every item matching the filters."""

    items: list[T]
    total: int = Field(examples=[42])
    limit: int = Field(examples=[50])
    offset: int = Field(examples=[0])


class FileOutcome(BaseModel):
    """What happened to one uploaded file."""

    model_config = ConfigDict(from_attributes=True)

    file: str = Field(examples=["img01.jpg"])
    status: Literal["created", "duplicate", "rejected"]
    id: str | None = Field(default=None, description="The created row (sample, volume or annotation).")
    reason: str | None = None
    slices: int | None = Field(
        default=None, description="A NIfTI volume: how many of its slices became samples."
    )
