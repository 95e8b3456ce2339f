"""``ObjectStore`` on S3 (MinIO in production, SeaweedFS in tests) via the minio SDK.

The only module that imports ``minio`` (an import-linter contract keeps it that way).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from app.storage.base import ObjectNotFound

_MISSING = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})


class S3Store:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str = "us-east-1",
    ) -> None:
        if "://" in endpoint:
            raise ValueError(
                f"S3 endpoint must be host:port without a scheme (use secure=), got {endpoint!r}"
            )
        self.bucket = bucket
        # An explicit region skips the GetBucketLocation round-trip before each first request.
        self._client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region
        )

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (compose does this with ``mc``; tests do it here)."""
        if not self._client.bucket_exists(self.bucket):
            self._client.make_bucket(self.bucket)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._client.put_object(
            self.bucket, key, io.BytesIO(data), length=len(data), content_type=content_type
        )

    def get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectNotFound(key) from exc
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            self._client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        # S3 DeleteObject succeeds for a missing key, which is the contract.
        self._client.remove_object(self.bucket, key)

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list(prefix))
        if not keys:
            return 0
        errors = list(self._client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
        if errors:
            raise RuntimeError(f"could not delete {len(errors)} objects under {prefix!r}: {errors[0]}")
        return len(keys)

    def list(self, prefix: str = "") -> Iterator[str]:
        names = (
            obj.object_name
            for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
            if obj.object_name is not None
        )
        return iter(sorted(names))

    def ping(self) -> None:
        if not self._client.bucket_exists(self.bucket):
            raise ConnectionError(f"S3 bucket {self.bucket!r} does not exist")
