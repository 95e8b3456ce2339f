"""Compensations for writes outside the database.

Objects are written to the store before the request commits; if the commit then fails, the rows vanish
but the objects would stay. Services register a cleanup on the session and whoever commits runs them on
failure (``app.api.deps.get_session``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from sqlalchemy.orm import Session

from app.storage.base import ObjectStore

_KEY = "gtc_cleanups"


def on_rollback(session: Session, cleanup: Callable[[], None]) -> None:
    """Run ``cleanup`` if this unit of work is rolled back instead of committed."""
    session.info.setdefault(_KEY, []).append(cleanup)


def _delete_keys(store: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        store.delete(key)


def delete_on_rollback(session: Session, store: ObjectStore, keys: list[str]) -> None:
    """Delete ``keys`` from ``store`` if this unit of work is rolled back."""
    on_rollback(session, partial(_delete_keys, store, list(keys)))


def run_cleanups(session: Session) -> None:
    """Run (and forget) every registered cleanup; one failing cleanup does not stop the others."""
    for cleanup in session.info.pop(_KEY, []):
        try:
            cleanup()
        except Exception:  # best effort: the original error is what the caller sees
            continue


def forget_cleanups(session: Session) -> None:
    """The unit of work committed: its objects are now owned by its rows."""
    session.info.pop(_KEY, None)
