"""API keys as the project sees them: never the key itself after it was issued, never its hash."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import UtcDateTime


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "ci-pipeline"}]})

    name: str = Field(default="default", min_length=1, max_length=200, description="What the key is for.")


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"note": "laptop lost"}]})

    note: str = Field(default="", max_length=2000, description="Why, for whoever reads the key list later.")


EXAMPLE: dict[str, Any] = {
    "id": "0b6f7a52-8c1e-4d0e-9b8a-2f6c1d4e5a77",
    "prefix": "gtc_AbC123xy",
    "name": "ci-pipeline",
    "created_at": "2026-12-06T19:00:00Z",
    "created_by": "key gtc_Zy98XwVu (default)",
    "revoked_at": None,
    "revoked_by": None,
    "revoke_note": None,
}


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [EXAMPLE]})

    id: uuid.UUID
    prefix: str = Field(description="The first characters, to tell keys apart.", examples=["gtc_AbC123xy"])
    name: str
    created_at: UtcDateTime
    created_by: str = Field(description="Who issued it: an operator at the CLI, or another key.")
    revoked_at: UtcDateTime | None = None
    revoked_by: str | None = None
    revoke_note: str | None = None


class KeyCreated(KeyOut):
    model_config = ConfigDict(json_schema_extra={"examples": [{**EXAMPLE, "key": "gtc_AbC123xy..."}]})

    key: str = Field(description="The key itself: shown this once, store it now.")
