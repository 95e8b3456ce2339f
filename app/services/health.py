"""Readiness: can this process reach its database, broker and object store?"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Engine, text

from app.services.queue import TaskQueue
from app.storage.base import ObjectStore

log = logging.getLogger(__name__)


def _database(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def readiness(
    engine: Engine, queue: TaskQueue, store: ObjectStore, worker: Callable[[], None] | None = None
) -> dict[str, str]:
    """check name -> "ok" or "failed"; every check runs even if an earlier one failed. The probe needs no
    key, so the reason (host names, ports, driver messages) goes to the log, not to the answer.
    ``worker``: the embedded worker's check (``gtcorrect serve``); production workers are separate
    deployments with their own probes."""
    checks: dict[str, Callable[[], None]] = {
        "database": lambda: _database(engine),
        "broker": queue.ping,
        "object_store": store.ping,
    }
    if worker is not None:
        checks["worker"] = worker
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # any failure means "not ready", reported by name
            log.warning("readiness: %s check failed: %s: %s", name, type(exc).__name__, exc)
            results[name] = "failed"
    return results
