"""``ObjectStore`` on S3 (MinIO in production, SeaweedFS in tests) via the minio SDK.

The only module that imports ``minio`` (an import-linter contract keeps it that way). Every request is
retried through an outage for ``retry_s`` seconds (``app.retry``); after that it raises
``StorageUnavailable``, and a request the store refuses raises ``StorageError``. Neither message names
the endpoint, the bucket or a key (they may reach a client); the log has them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError

from app.retry import with_retry
from app.storage.base import ObjectNotFound, StorageError, StorageUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

_MISSING = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
# Codes an S3 server answers while it is overloaded or restarting: worth trying again.
_BUSY = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})
CONNECT_TIMEOUT_S = 5.0  # the SDK's default is 5 min: an unreachable store would hold a request that long
READ_TIMEOUT_S = 120.0


def transient(exc: BaseException) -> bool:
    """An outage (no answer, a dropped connection, a busy server), not a refusal."""
    if isinstance(exc, S3Error):
        return exc.code in _BUSY
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError | ServerError | InvalidResponseError)


class S3Store:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str = "us-east-1",
        retry_s: float = 5.0,
    ) -> None:
        if "://" in endpoint:
            raise ValueError(
                f"S3 endpoint must be host:port without a scheme (use secure=), got {endpoint!r}"
            )
        self.bucket, self.retry_s = bucket, retry_s
        # Retries are ours (``_call``): the pool only bounds how long one try may wait.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
            maxsize=10,
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0, raise_on_status=False),
        )
        # An explicit region skips the GetBucketLocation round-trip before each first request.
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )

    def _call(self, what: str, call: Callable[[], T], key: str = "") -> T:
        """``call()`` retried through an outage; the SDK's errors become the port's."""
        try:
            return with_retry(call, transient=transient, window_s=self.retry_s, what=f"S3 {what}")
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectNotFound(key) from None
            log.warning("S3 %s %s/%s: %s", what, self.bucket, key, exc)
            if exc.code in _BUSY:
                raise StorageUnavailable("the object store is unavailable; try again later") from exc
            raise StorageError(f"the object store refused the request ({exc.code})") from exc
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("S3 %s %s/%s: unavailable for %.0f s: %s", what, self.bucket, key, self.retry_s, exc)
            raise StorageUnavailable("the object store is unavailable; try again later") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (compose does this with ``mc``; tests do it here)."""
        if not self._client.bucket_exists(self.bucket):
            self._client.make_bucket(self.bucket)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        # A fresh stream per try: a retried upload sends the whole object again.
        self._call(
            "put",
            lambda: self._client.put_object(
                self.bucket, key, io.BytesIO(data), length=len(data), content_type=content_type
            ),
            key,
        )

    def get(self, key: str) -> bytes:
        def read() -> bytes:
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call("get", read, key)

    def exists(self, key: str) -> bool:
        try:
            self._call("stat", lambda: self._client.stat_object(self.bucket, key), key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        # S3 DeleteObject succeeds for a missing key, which is the contract.
        self._call("delete", lambda: self._client.remove_object(self.bucket, key), key)

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list(prefix))
        if not keys:
            return 0
        errors = self._call(
            "delete",
            lambda: list(self._client.remove_objects(self.bucket, (DeleteObject(k) for k in keys))),
            prefix,
        )
        if errors:
            log.warning(
                "S3 delete under %s/%s: %d errors, first %s", self.bucket, prefix, len(errors), errors[0]
            )
            raise StorageError(f"the object store kept {len(errors)} of the objects it was asked to delete")
        return len(keys)

    def list(self, prefix: str = "") -> Iterator[str]:
        def names() -> list[str]:
            listed = self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
            return sorted(obj.object_name for obj in listed if obj.object_name is not None)

        return iter(self._call("list", names, prefix))

    def ping(self) -> None:
        """One try, no retry: readiness says what is true now."""
        if not self._client.bucket_exists(self.bucket):
            raise ConnectionError(f"S3 bucket {self.bucket!r} does not exist")
