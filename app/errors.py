"""The one error tree of the service: raised deep (services), rendered once at the edge
(``app.api.problems``).

Every error carries an HTTP status, a short title and a detail that names the offending value or file;
extra fields (``invalid_files``, ``field``...) are copied into the RFC 9457 problem document.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    """Base of every error the API renders as ``application/problem+json``."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    slug: ClassVar[str] = "internal"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return f"https://gtcorrect.dev/problems/{self.slug}"

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            body["instance"] = instance
        body.update(self.extra)
        return body


class NotFound(AppError):
    status = 404
    title = "Not found"
    slug = "not-found"


class Conflict(AppError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class InvalidInput(AppError):
    """Well-formed request whose content is wrong (a bad image, a mask outside the label map)."""

    status = 422
    title = "Invalid input"
    slug = "invalid-input"


class BadRequest(InvalidInput):
    """Malformed request (missing file part, unreadable form)."""

    status = 400
    title = "Bad request"
    slug = "bad-request"


class TooManyRequests(AppError):
    status = 429
    title = "Too many requests"
    slug = "too-many-requests"


class PayloadTooLarge(AppError):
    status = 413
    title = "Payload too large"
    slug = "payload-too-large"


class UnsupportedMediaType(AppError):
    status = 415
    title = "Unsupported media type"
    slug = "unsupported-media-type"


class Unauthorized(AppError):
    status = 401
    title = "Unauthorized"
    slug = "unauthorized"


class Forbidden(AppError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


class ServiceUnavailable(AppError):
    status = 503
    title = "Service unavailable"
    slug = "unavailable"
