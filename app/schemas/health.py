"""Readiness answer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "ok", "checks": {"database": "ok", "broker": "ok", "object_store": "ok"}}]
        }
    )

    status: str
    checks: dict[str, str]
