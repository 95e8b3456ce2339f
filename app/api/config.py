"""/v1/config: the named presets of a job's config; and ``TrainConfig``'s JSON Schema in OpenAPI."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

from app.api.deps import Limit, Offset, ProjectDep
from app.schemas.common import Page
from app.schemas.jobs import PresetOut
from gtcorrect.config import PRESETS, ConfigLimits, TrainConfig, schedule_epochs
from gtcorrect.config_schema import REF, config_schemas

router = APIRouter(prefix="/v1/config", tags=["config"])


@router.get("/presets", summary="List the named presets of a job's config", response_model=Page[PresetOut])
def list_presets(_project: ProjectDep, limit: Limit = 50, offset: Offset = 0) -> Page[PresetOut]:
    """Named starting points for `POST /v1/jobs` (`preset`): each one's partial config and the most
    epochs it trains. Every field is described, with its default and bounds, in the TrainConfig schema."""
    items = [
        PresetOut(
            name=p.name,
            description=p.description,
            config=p.config,
            epochs=schedule_epochs(TrainConfig.from_dict(p.config)),
        )
        for p in PRESETS.values()
    ]
    return Page(items=items[offset : offset + limit], total=len(items), limit=limit, offset=offset)


def install_schema(app: FastAPI, limits: ConfigLimits) -> None:
    """OpenAPI gains ``TrainConfig`` and its sections as components, with this service's ``limits`` as
    bounds, and a job's ``config`` refers to it. Wraps the app's ``openapi`` as installed so far."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(config_schemas(limits))
            field = schema["components"]["schemas"]["JobCreate"]["properties"]["config"]
            field.pop("additionalProperties", None)
            field.pop("type", None)
            field["allOf"] = [{"$ref": REF + "TrainConfig"}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
