"""Hand memory back to the operating system after large requests (glibc only; a no-op elsewhere).

A decoded 7000 x 7000 image is 147 MB. With glibc's defaults such buffers may land in the heap, where
freeing them does not shrink the process: the API once stayed at 2.66 GB after a few large uploads. At
start-up the API asks glibc to serve every allocation of 32 MB or more with its own mmap (returned to the
system when freed), to keep at most 64 MB of free heap and at most two arenas; after every request whose
body is larger than 1 MB it trims the heap. The threshold was 1 MB until the speed benchmark showed its
cost: a network's activations (a few MB each) were mapped and unmapped on every forward pass, which ran
1.6-1.9x slower than with the heap (BENCHMARKS.md, "Where users wait"). A process started with
``MALLOC_MMAP_THRESHOLD_`` set keeps what its operator chose (the training worker and the test suite set
it: training is faster with large thresholds).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from functools import cache

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
LARGE_BYTES = 1 << 20  # a request body above this is followed by a trim
MMAP_BYTES = 32 << 20  # allocations this large get their own mapping (glibc's upper bound for it)
KEEP_FREE_BYTES = 64 << 20  # free heap kept for the next request rather than returned at once


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt  # noqa: B018 - glibc has it; musl and others do not
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocator() -> bool:
    """Allocations of 32 MB and more mmapped, two arenas, trimming above 64 MB free; False where not
    glibc or where the environment already sets the allocator."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        log.info("MALLOC_MMAP_THRESHOLD_ is set: allocator settings left as the environment chose")
        return False
    libc = _libc()
    if libc is None:
        log.info("not glibc: allocator settings left as they are")
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_BYTES), (M_TRIM_THRESHOLD, KEEP_FREE_BYTES), (M_ARENA_MAX, 2))
    return all(libc.mallopt(option, value) == 1 for option, value in settings)


def trim() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


class TrimAfterLargeRequests:
    """Pure ASGI middleware: ``trim()`` once a request that declared a body above 1 MB is answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        try:
            await self.app(scope, receive, send)
        finally:
            if length.isdigit() and int(length) > LARGE_BYTES:
                trim()
