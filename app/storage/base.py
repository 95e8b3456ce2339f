"""The ``ObjectStore`` port: every blob (images, masks, checkpoints, plots, models) goes through it.

Adapters: ``app.storage.s3.S3Store`` (MinIO/S3 via the minio SDK) and
``app.storage.local.LocalStore`` (a directory, for the embedded mode). One contract test suite runs
against both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Protocol, runtime_checkable

PUT_WORKERS = 8  # objects written at once by put_all: S3 round trips overlap, the bytes are small


class ObjectNotFound(KeyError):
    """The key does not exist in the store."""


class StorageError(RuntimeError):
    """The store refused or failed a request. Its message names no endpoint, bucket or key: it may reach
    a client (a job's error); the adapter logs the details."""


class StorageUnavailable(StorageError, ConnectionError):
    """The store did not answer within the adapter's retry window (an outage, not a refusal)."""


@runtime_checkable
class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write ``data`` at ``key``, replacing any previous object (keys are deterministic)."""

    def get(self, key: str) -> bytes:
        """Read the whole object; raise ``ObjectNotFound`` if absent."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Delete one object; deleting a missing key is not an error."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; return how many were deleted."""

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix``, sorted."""

    def ping(self) -> None:
        """Raise if the store cannot be reached (used by ``/readyz``)."""


def put_all(store: ObjectStore, items: Sequence[tuple[str, bytes]], content_type: str) -> None:
    """Write every ``(key, data)`` of ``items``, ``PUT_WORKERS`` at a time (both adapters are thread-safe).
    On the first failure the writes not yet started are dropped and the error is raised once the writes
    in flight have ended, so nothing lands after the call returns; what was written stays for the
    caller's rollback cleanup to delete."""
    if not items:
        return
    with ThreadPoolExecutor(min(PUT_WORKERS, len(items)), thread_name_prefix="put") as pool:
        futures = [pool.submit(store.put, key, data, content_type=content_type) for key, data in items]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
    for future in futures:  # the pool has shut down: every future has ended or was cancelled
        if not future.cancelled() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]
