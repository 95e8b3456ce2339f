"""``ObjectStore`` on a local directory, for the embedded mode (no MinIO).

Keys map to files under ``root``. Writes are atomic (temp file, then ``os.replace``) so a reader
never sees half an object, and keys that would escape ``root`` are refused.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from app.storage.base import ObjectNotFound

_TMP_SUFFIX = ".part"


class LocalStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        pure = PurePosixPath(key)
        if (
            not key
            or key.endswith("/")
            or pure.is_absolute()
            or "\\" in key
            or "\x00" in key
            or any(part in ("", ".", "..") for part in key.split("/"))
            or key.endswith(_TMP_SUFFIX)
        ):
            raise ValueError(f"invalid object key {key!r}: must be a relative path without '.', '..' or '//'")
        path = self.root.joinpath(*pure.parts)
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"invalid object key {key!r}: escapes the store root")
        return path

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list(prefix))
        for key in keys:
            self.delete(key)
        return len(keys)

    def list(self, prefix: str = "") -> Iterator[str]:
        keys = []
        for path in self.root.rglob("*"):
            if not path.is_file() or path.name.endswith(_TMP_SUFFIX):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                keys.append(key)
        return iter(sorted(keys))

    def ping(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise ConnectionError(f"object directory {self.root} is missing or not writable")
