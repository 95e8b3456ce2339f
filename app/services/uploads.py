"""Uploaded files: limits, and safe extraction of zip archives (shared by images and masks)."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from app.errors import InvalidInput, PayloadTooLarge

ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int
    max_zip_entries: int
    max_zip_ratio: int
    max_image_pixels: int

    @classmethod
    def from_settings(cls, settings: Any) -> UploadLimits:
        return cls(
            max_upload_bytes=settings.max_upload_bytes,
            max_zip_entries=settings.max_zip_entries,
            max_zip_ratio=settings.max_zip_ratio,
            max_image_pixels=settings.max_image_pixels,
        )


@dataclass(frozen=True)
class Blob:
    """One uploaded file: its base name and bytes."""

    name: str
    data: bytes


def is_zip(blob: Blob) -> bool:
    return blob.name.lower().endswith(".zip") or blob.data[:4] == ZIP_MAGIC


def expand(blobs: list[Blob], limits: UploadLimits) -> list[Blob]:
    """Check total size, unpack zip archives and return the plain files.

    Raises ``PayloadTooLarge`` above ``max_upload_bytes`` (compressed or uncompressed) and
    ``InvalidInput`` with ``invalid_files`` for unsafe or broken archives.
    """
    total = sum(len(b.data) for b in blobs)
    if total > limits.max_upload_bytes:
        raise PayloadTooLarge(
            f"the upload holds {total} bytes, above the limit of {limits.max_upload_bytes}."
        )
    if not blobs:
        raise InvalidInput("the upload holds no files: send multipart 'files' or one zip archive.")
    out: list[Blob] = []
    for blob in blobs:
        out.extend(unzip(blob, limits) if is_zip(blob) else [blob])
    return out


def _entry_problem(info: zipfile.ZipInfo, limits: UploadLimits) -> str | None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path escapes the archive root"
    if ".." in parts:
        return "path with '..' escapes the archive root"
    if name.lower().endswith(ARCHIVE_SUFFIXES):
        return "nested archives are not accepted"
    if info.file_size and (
        info.compress_size == 0 or info.file_size / info.compress_size > limits.max_zip_ratio
    ):
        return f"compression ratio above the limit of {limits.max_zip_ratio} (zip bomb?)"
    return None


def _ignored(info: zipfile.ZipInfo) -> bool:
    # Finder and editors add these; they are never data.
    path = PurePosixPath(info.filename.replace("\\", "/"))
    return info.is_dir() or path.parts[:1] == ("__MACOSX",) or path.name.startswith(".")


def unzip(blob: Blob, limits: UploadLimits) -> list[Blob]:
    """Extract a zip archive in memory, refusing unsafe entries; entries are named by their base name."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob.data))
    except zipfile.BadZipFile as exc:
        raise InvalidInput(
            f"{blob.name}: not a readable zip archive.",
            invalid_files=[{"file": blob.name, "reason": str(exc)}],
        ) from exc
    with archive:
        infos = [i for i in archive.infolist() if not _ignored(i)]
        if len(infos) > limits.max_zip_entries:
            raise InvalidInput(
                f"{blob.name}: {len(infos)} entries, above the limit of {limits.max_zip_entries}.",
                invalid_files=[{"file": blob.name, "reason": "too many entries"}],
            )
        total = sum(i.file_size for i in infos)
        if total > limits.max_upload_bytes:
            raise PayloadTooLarge(
                f"{blob.name}: {total} bytes uncompressed, above the limit of {limits.max_upload_bytes}."
            )
        problems = [
            {"file": i.filename, "reason": p} for i in infos if (p := _entry_problem(i, limits)) is not None
        ]
        if problems:
            raise InvalidInput(
                f"{blob.name}: {len(problems)} unsafe archive entries.", invalid_files=problems
            )
        files: list[Blob] = []
        for info in infos:
            data = archive.read(info)
            if data[:4] == ZIP_MAGIC:
                problems.append({"file": info.filename, "reason": "nested archives are not accepted"})
            files.append(Blob(PurePosixPath(info.filename.replace("\\", "/")).name, data))
        if problems:
            raise InvalidInput(f"{blob.name}: nested archives.", invalid_files=problems)
    return files


def duplicate_names(blobs: list[Blob]) -> list[dict[str, str]]:
    """Problems for file names that occur more than once (case-insensitive) in one upload."""
    seen: set[str] = set()
    problems: list[dict[str, str]] = []
    for blob in blobs:
        key = blob.name.lower()
        if key in seen:
            problems.append({"file": blob.name, "reason": "the same file name occurs twice in this upload"})
        seen.add(key)
    return problems


def reason(exc: ValueError, name: str) -> str:
    """The reason part of a ``gtcorrect.data`` error (its message starts with the file name)."""
    text = str(exc)
    return text[len(name) + 2 :] if text.startswith(f"{name}: ") else text
