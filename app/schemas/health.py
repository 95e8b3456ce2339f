"""Readiness answer."""

from __future__ import annotations

from pydantic import BaseModel


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]
