"""Reading objects that rows point at."""

from __future__ import annotations

from app.errors import NotFound
from app.storage.base import ObjectNotFound, ObjectStore


def read_object(store: ObjectStore, key: str) -> bytes:
    """The object at ``key``; a row whose object is gone is reported as 404, not as a server error."""
    try:
        return store.get(key)
    except ObjectNotFound as exc:
        raise NotFound(f"object {key} is missing from the store.") from exc
