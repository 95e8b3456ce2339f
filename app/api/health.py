"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.schemas.health import Readiness
from app.services.health import readiness

router = APIRouter(tags=["health"])


@router.get("/livez", summary="The process is up", response_model=Readiness)
def livez() -> Readiness:
    """The process is up (no dependency is checked): for a container's liveness probe."""
    return Readiness(status="ok", checks={})


@router.get(
    "/readyz",
    summary="Database, broker and object store are reachable",
    response_model=Readiness,
    responses={503: {"description": "A check failed; the failing check is named."}},
)
def readyz(request: Request) -> JSONResponse:
    """Whether PostgreSQL, the broker (Redis) and the object store answer (and, under `gtcorrect serve`,
    whether its embedded worker runs): 200 when all do, 503 naming the ones that do not."""
    state = request.app.state
    supervisor = getattr(state, "worker_supervisor", None)  # only under `gtcorrect serve`
    worker = None if supervisor is None else supervisor.check
    checks = readiness(state.engine, state.queue, state.store, worker)
    failed = [name for name, result in checks.items() if result != "ok"]
    if failed:
        body = {
            "type": "https://gtcorrect.dev/problems/unavailable",
            "title": "Service unavailable",
            "status": 503,
            "detail": f"not ready: {', '.join(failed)} check failed.",
            "checks": checks,
        }
        return JSONResponse(body, status_code=503, media_type="application/problem+json")
    return JSONResponse(Readiness(status="ok", checks=checks).model_dump())
