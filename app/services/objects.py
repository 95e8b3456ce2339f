"""Reading objects that rows point at."""

from __future__ import annotations

import logging

from app.errors import NotFound
from app.storage.base import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)


def read_object(store: ObjectStore, key: str) -> bytes:
    """The object at ``key``; a row whose object is gone is reported as 404, not as a server error."""
    try:
        return store.get(key)
    except ObjectNotFound:
        log.warning("object %s is missing from the store", key)
        raise NotFound(
            "the stored file is missing from the object store (deleted outside the service?)."
        ) from None
