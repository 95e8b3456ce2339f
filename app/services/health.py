"""Readiness: can this process reach its database, broker and object store?"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, text

from app.services.queue import TaskQueue
from app.storage.base import ObjectStore


def _database(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def readiness(engine: Engine, queue: TaskQueue, store: ObjectStore) -> dict[str, str]:
    """check name -> "ok" or "failed: <reason>"; every check runs even if an earlier one failed."""
    checks: dict[str, Callable[[], None]] = {
        "database": lambda: _database(engine),
        "broker": queue.ping,
        "object_store": store.ping,
    }
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # any failure means "not ready", reported by name
            results[name] = f"failed: {type(exc).__name__}: {exc}"
    return results
