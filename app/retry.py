"""Waiting out a dependency's outage: a call retried with backoff for a bounded time.

The object store (``app.storage.s3``) and the worker's database calls (``worker.runner``) go through
``with_retry``; what counts as an outage is the caller's (``app.db.session.is_outage`` for the
database). After the window the last error is raised: the API answers 503 with Retry-After
(``app.api.problems``), the worker gives its job back to the queue (``app.services.jobstate.release``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_WAIT_S = 0.25
MAX_WAIT_S = 5.0


def with_retry(
    call: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    window_s: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``call()``, tried again after a transient error (waits doubling from 0.25 s to 5 s) for as long
    as the next try still starts within ``window_s`` of the first; then the error is raised."""
    deadline = clock() + window_s
    wait = FIRST_WAIT_S
    while True:
        try:
            return call()
        except Exception as exc:
            if not transient(exc) or clock() + wait > deadline:
                raise
            log.warning("%s failed (%s); trying again in %.2f s", what, type(exc).__name__, wait)
        sleep(wait)
        wait = min(wait * 2, MAX_WAIT_S)
