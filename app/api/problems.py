"""Render every error once, as RFC 9457 ``application/problem+json``."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

from app.errors import AppError, InvalidInput, ServiceUnavailable, Unauthorized
from app.storage.base import StorageError, StorageUnavailable

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("app.api")


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        jsonable_encoder(body), status_code=body["status"], media_type=PROBLEM_JSON, headers=headers
    )


async def app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else {}
    if "retry_after" in exc.extra:  # a 429 or 503 says when to try again, for clients and proxies too
        headers["Retry-After"] = str(int(exc.extra["retry_after"]))
    return problem_response(exc.to_problem(instance=request.url.path), headers or None)


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _message(error: Any) -> str:
    """Pydantic's message, with the position for a body that is not JSON (its "loc" is a byte offset)."""
    msg = str(error.get("msg", ""))
    if error.get("type") == "json_invalid":
        loc = list(error.get("loc", ()))
        where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        reason = (error.get("ctx") or {}).get("error", msg)
        return f"the request body is not valid JSON{where}: {reason}"
    return msg


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": list(e.get("loc", ())),
            "field": _where(e.get("loc", ())),
            "msg": _message(e),
            "type": e.get("type", ""),
        }
        for e in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        # The position pydantic reports is an offset into the body, not a field: say what it is.
        errors = [{**e, "field": "body"} for e in errors if e["type"] == "json_invalid"]
    detail = "; ".join(f"{e['field']}: {e['msg']}" for e in errors) or "the request is not valid."
    problem = InvalidInput(detail, errors=errors).to_problem(instance=request.url.path)
    problem["title"] = "Request validation failed"
    return problem_response(problem)


def _routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """Every endpoint route under ``routes`` with the prefix it is reached under (FastAPI keeps an
    included router's routes behind a wrapper with the ``original_router``)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from _routes(included.routes, prefix + getattr(context, "prefix", ""))
        elif getattr(route, "methods", None) and getattr(route, "path_regex", None) is not None:
            yield prefix, route


def allowed_methods(app: Any, path: str) -> list[str]:
    """The methods some route answers at ``path``. Starlette's 405 names only the first route that
    matched the path, while a path here often has one route per method (GET and DELETE of a job)."""
    methods: set[str] = set()
    for prefix, route in _routes(app.routes):
        if path.startswith(prefix) and route.path_regex.match(path[len(prefix) :]):  # type: ignore[attr-defined]
            methods |= set(route.methods)  # type: ignore[attr-defined]
    return sorted(methods)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else {}
    detail = str(exc.detail)
    if exc.status_code == 405:
        allowed = allowed_methods(request.app, request.url.path) or headers.get("Allow", "").split(", ")
        headers["Allow"] = ", ".join(allowed)
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}."
    body = {
        "type": "about:blank",
        "title": _TITLES.get(exc.status_code, "HTTP error"),
        "status": exc.status_code,
        "detail": detail,
        "instance": request.url.path,
    }
    return problem_response(body, headers or None)


async def data_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A value the database refuses (a NUL character, a too long text, a number out of range) is the
    client's input, not a 500.

    Services and schemas validate what they can name; this is the net for the fields they do not check.
    Only the first line of the driver's message is shown: it names the problem, never the SQL.
    """
    assert isinstance(exc, DataError)
    log.info("database refused a value on %s %s: %s", request.method, request.url.path, exc.orig)
    reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
    problem = InvalidInput(
        f"a value in the request cannot be stored or compared by the database: {reason}.", reason=reason
    ).to_problem(instance=request.url.path)
    return problem_response(problem)


OUTAGE_RETRY_AFTER_S = 30
DEPENDENCY_ERRORS = (StorageError, OperationalError, InterfaceError)


def dependency_error(exc: Exception, where: str) -> ServiceUnavailable:
    """The 503 for a dependency error on ``where`` (method and path), logged: the database or the object
    store is down (past the store's retry window), with Retry-After; or the store refused a request. It
    names which dependency, never its address, bucket or key."""
    if isinstance(exc, StorageUnavailable | OperationalError | InterfaceError):
        what = "object store" if isinstance(exc, StorageError) else "database"
        log.warning("%s unavailable on %s: %s", what, where, exc)
        return ServiceUnavailable(
            f"the {what} is unavailable; try again later.",
            dependency=what.replace(" ", "_"),
            retry_after=OUTAGE_RETRY_AFTER_S,
        )
    log.error("object store refused a request on %s: %s", where, exc)
    return ServiceUnavailable(f"{exc}; the operator has to look at the store.", dependency="object_store")


async def dependency_error_handler(request: Request, exc: Exception) -> JSONResponse:
    return await app_error_handler(request, dependency_error(exc, f"{request.method} {request.url.path}"))


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = {
        "type": "about:blank",
        "title": "Internal server error",
        "status": 500,
        "detail": "an unexpected error occurred; it has been logged.",
        "instance": request.url.path,
    }
    return problem_response(body)


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    415: "Unsupported media type",
}


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; extra members name what was wrong.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "invalid_files": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["file", "reason"],
                "properties": {"file": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
        "errors": {"type": "array", "items": {"type": "object"}},
        "field": {"type": "string"},
    },
    "additionalProperties": True,
}
_DESCRIPTIONS = {
    "400": "Malformed request (for example an unreadable multipart body).",
    "401": "Missing or unknown API key.",
    "404": "A resource named in the path does not exist in this project.",
    "409": "The resource is not in a state that allows this.",
    "413": "The request body is larger than the limit.",
    "415": "The body has the wrong content type.",
    "422": "The request is well-formed but its content is not valid.",
}


def _problem_codes(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    """The problem statuses an operation can answer, from what every route shares (auth, path ids, a body)."""
    codes = ["422"]
    if path.startswith("/v1/"):
        codes += ["401", "404"]  # 404 without path ids too: a body or query can name a missing resource
    if method in ("post", "put", "patch", "delete"):
        codes.append("409")
    if "requestBody" in operation:
        codes += ["400", "413", "415"]
    return codes


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the problem+json error responses to every operation of an OpenAPI ``schema`` (in place).

    Errors are rendered in one place (this module), so they are documented in one place too; FastAPI's
    own 422 (``HTTPValidationError``) is replaced because the handler above answers problem+json.
    """
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for code in _problem_codes(path, method, operation):
                entry = responses.setdefault(code, {"description": _DESCRIPTIONS[code]})
                entry["content"] = content
            if "503" in responses:
                responses["503"]["content"] = content
    return schema


def _openapi_with_problems(app: FastAPI) -> Any:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(FastAPI.openapi(app))
        return app.openapi_schema

    return openapi


def install(app: FastAPI) -> None:
    app.openapi = _openapi_with_problems(app)  # type: ignore[method-assign]
    app.add_exception_handler(AppError, app_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(DataError, data_error_handler)
    for error in DEPENDENCY_ERRORS:
        app.add_exception_handler(error, dependency_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
