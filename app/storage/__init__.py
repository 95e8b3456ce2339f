"""Object storage: the ``ObjectStore`` port (``base``), key builders (``keys``) and adapters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.storage.base import ObjectNotFound, ObjectStore

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = ["ObjectNotFound", "ObjectStore", "make_store"]


def make_store(settings: Settings, retry_s: float | None = None) -> ObjectStore:
    """The adapter that ``settings.storage`` names. Does not create the S3 bucket (compose's init does).
    ``retry_s``: how long an S3 call waits out an outage (default ``settings.api_retry_s``)."""
    if settings.storage == "s3":
        # Imported here so the embedded mode never loads the minio SDK.
        from app.storage.s3 import S3Store

        return S3Store(
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            bucket=settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
            retry_s=settings.api_retry_s if retry_s is None else retry_s,
        )
    from app.storage.local import LocalStore

    return LocalStore(settings.resolved_local_dir())
