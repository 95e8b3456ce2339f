"""Uploaded files: limits, file names, and safe extraction of zip archives (shared by images and masks)."""

from __future__ import annotations

import hashlib
import io
import threading
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any, cast

import numpy as np
import tifffile
from PIL import Image, ImageMode

from app.errors import InvalidInput, PayloadTooLarge, ServiceUnavailable
from gtcorrect import dicom, volumes
from gtcorrect.formats import FORMAT_NAMES

MIB = 1024 * 1024

ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst")
ZIP_MAGIC = b"PK\x03\x04"
# Other archive and compressed formats, recognised by content whatever their name says.
ARCHIVE_MAGIC = (
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!\x1a\x07",
    b"\x28\xb5\x2f\xfd",
)
MAX_NAME_CHARS = 255  # one path segment on common file systems; the column is wider
UTF8_FLAG = 0x800
# PIL's format names, and "DICOM" (gtcorrect.dicom reads its header). MPO: JPEG from cameras.
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "BMP", "MPO", "DICOM"})
NOT_ZIP = "only zip archives are accepted (tar, gz, 7z, rar... are not)"
NO_VOLUMES = (
    "a NIfTI volume, which this endpoint does not take: upload volumes as a dataset's images and label "
    "volumes as its masks, and segment one with POST /v1/models/{id}/segment"
)
# Reading an entry can fail in many ways for a corrupt or exotic archive; each is the client's file.
_ENTRY_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OSError,
)


class DecodeBudget:
    """How many bytes this process may hold for decoding at once, across all its requests
    (``GTC_MAX_DECODE_BYTES``). A request declares what an image will cost (``declared_bytes``, from its
    header, before decoding) and waits while others hold the budget; after ``wait_s`` it gets a 503
    asking to retry. One image larger than the whole budget takes all of it (it decodes alone)."""

    def __init__(self, limit: int, wait_s: float = 60.0) -> None:
        self.limit, self.wait_s, self.used = limit, wait_s, 0
        self._free = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        nbytes = min(max(nbytes, 0), self.limit)
        with self._free:
            if not self._free.wait_for(lambda: self.used + nbytes <= self.limit, self.wait_s):
                raise ServiceUnavailable(
                    f"the server is decoding {self.used / MIB:.0f} MB of other images, its limit at once "
                    f"(GTC_MAX_DECODE_BYTES={self.limit}); retry in a minute.",
                    retry_after=60,
                )
            self.used += nbytes
        try:
            yield
        finally:
            with self._free:
                self.used -= nbytes
                self._free.notify_all()


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int
    max_zip_entries: int
    max_zip_ratio: int
    max_image_pixels: int
    budget: DecodeBudget | None = None  # the process's decode budget; None: unbounded (tests, tools)

    @classmethod
    def from_settings(cls, settings: Any, budget: DecodeBudget | None = None) -> UploadLimits:
        return cls(
            max_upload_bytes=settings.max_upload_bytes,
            max_zip_entries=settings.max_zip_entries,
            max_zip_ratio=settings.max_zip_ratio,
            max_image_pixels=settings.max_image_pixels,
            budget=budget,
        )

    @contextmanager
    def decoding(self, blob: Blob) -> Iterator[None]:
        """Hold the process's decode budget for what ``blob`` declares while it is decoded and used."""
        with self.holding(declared_bytes(blob)):
            yield

    @contextmanager
    def holding(self, nbytes: int) -> Iterator[None]:
        """Hold the process's decode budget for ``nbytes`` (e.g. a mask drawn from an annotation tool's
        export: ``drawn_bytes``)."""
        if self.budget is None:
            yield
            return
        with self.budget.hold(nbytes):
            yield


class Blob:
    """One uploaded file: its base name and where its bytes are (in memory, in the request's spooled
    upload file, or inside a zip archive). Reading is on demand, so a request holds the bytes of one
    file at a time however many it uploads; ``data`` reads the whole file again on every access."""

    __slots__ = ("_data", "_opener", "name", "size")

    def __init__(
        self,
        name: str,
        data: bytes | None = None,
        *,
        opener: Callable[[], IO[bytes]] | None = None,
        size: int | None = None,
    ) -> None:
        if (data is None) == (opener is None):
            raise ValueError("a Blob needs either data or an opener")
        # One name, one spelling: "é" typed on macOS (NFD) and on Linux (NFC) is the same file.
        self.name = unicodedata.normalize("NFC", name)
        self._data, self._opener = data, opener
        self.size = len(data) if data is not None else int(size or 0)

    @classmethod
    def from_file(cls, name: str, file: IO[bytes]) -> Blob:
        """A seekable file (an upload spooled to disk by the multipart parser), read when needed."""
        file.seek(0, io.SEEK_END)
        size = file.tell()

        def opener() -> IO[bytes]:
            file.seek(0)
            return cast(IO[bytes], _Borrowed(file))

        return cls(name, opener=opener, size=size)

    def open(self) -> IO[bytes]:
        return io.BytesIO(self._data) if self._data is not None else self._opener()  # type: ignore[misc]

    @property
    def data(self) -> bytes:
        if self._data is not None:
            return self._data
        with self.open() as f:
            return f.read()

    def head(self, n: int) -> bytes:
        with self.open() as f:
            return f.read(n)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.open() as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()


class _Borrowed(io.RawIOBase):
    """A view of a file that closing does not close (the request owns the upload file)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._file.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


@dataclass(frozen=True)
class Outcome:
    file: str
    status: str  # "created" or "duplicate"
    id: str
    reason: str | None = None
    slices: int | None = None  # a volume: how many slices became samples

    @classmethod
    def duplicate(cls, file: str, prior_id: object, prior_name: str) -> Outcome:
        """A file whose content the dataset holds already (as ``prior_name``): reported, not stored."""
        return cls(file, "duplicate", str(prior_id), f"same content as {prior_name}")


def encode_png(array: np.ndarray) -> bytes:
    """(H, W, C) or (H, W) uint8 -> PNG bytes (C = 1 is stored as grey): how images are stored."""
    img = array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="PNG")
    return buffer.getvalue()


def is_zip(blob: Blob) -> bool:
    return blob.name.lower().endswith(".zip") or blob.head(4) == ZIP_MAGIC


def is_other_archive(name: str, data: bytes) -> bool:
    """A tar, gzip, bzip2, xz, 7z, rar or zstd file (by name or content); zip is handled apart."""
    tar = len(data) > 262 and data[257:262] == b"ustar"
    lowered = name.lower()
    return (
        (lowered.endswith(ARCHIVE_SUFFIXES) and not lowered.endswith(".zip"))
        or tar
        or (data.startswith(ARCHIVE_MAGIC))
    )


# Bidirectional controls make a name display other than it is ("gpj.exe" shown as "exe.jpg").
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def text_problem(value: str, *, allow_newlines: bool = False) -> str | None:
    """Why user text (a name, an annotator, a note) cannot be stored, or None: control characters
    (PostgreSQL refuses NUL; newlines only where allowed) or bidirectional controls."""
    allowed = "\n\r\t" if allow_newlines else ""
    control = sorted(
        {f"U+{ord(ch):04X}" for ch in value if unicodedata.category(ch) == "Cc" and ch not in allowed}
    )
    if control:
        return f"contains control characters {', '.join(control)}"
    bidi = sorted({f"U+{ord(ch):04X}" for ch in value if ch in BIDI_CONTROLS})
    if bidi:
        return f"contains bidirectional controls {', '.join(bidi)}, which make text display other than it is"
    return None


def name_problem(name: str) -> str | None:
    """Why a (base) file name cannot be stored, or None: empty, a path, control or bidi characters,
    too long."""
    if not name.strip():
        return "empty file name"
    if name.strip() in (".", "..") or "/" in name or "\\" in name:
        return "a file name must not be '.', '..' or contain a path separator"
    problem = text_problem(name)
    if problem is not None:
        return f"file name {problem}"
    if len(name) > MAX_NAME_CHARS:
        return f"file name of {len(name)} characters, above the limit of {MAX_NAME_CHARS}"
    return None


def expand(blobs: list[Blob], limits: UploadLimits, *, keep_paths: bool = False) -> list[Blob]:
    """Check total size and names, unpack zip archives and return the plain files (named by their base
    name, or with ``keep_paths`` by their path in the archive, ``/``-separated).

    Raises ``PayloadTooLarge`` above ``max_upload_bytes`` (compressed or uncompressed) and
    ``InvalidInput`` with ``invalid_files`` for bad names, other archive formats and unsafe, broken or
    empty zip archives.
    """
    total = sum(b.size for b in blobs)
    if total > limits.max_upload_bytes:
        raise PayloadTooLarge(
            f"the upload holds {total} bytes, above the limit of {limits.max_upload_bytes}."
        )
    if not blobs:
        raise InvalidInput("the upload holds no files: send multipart 'files' or one zip archive.")
    problems = [{"file": b.name, "reason": p} for b in blobs if (p := name_problem(b.name)) is not None]
    problems += [
        {"file": b.name, "reason": NOT_ZIP}
        for b in blobs
        if not volumes.is_volume(b.name) and not is_zip(b) and is_other_archive(b.name, b.head(512))
    ]
    if problems:
        raise InvalidInput(
            f"{len(problems)} files were rejected; nothing was stored.", invalid_files=problems
        )
    out: list[Blob] = []
    for blob in blobs:
        out.extend(unzip(blob, limits, keep_paths=keep_paths) if is_zip(blob) else [blob])
    return out


def entry_name(info: zipfile.ZipInfo) -> str | None:
    """The entry's name as its author meant it, or None when its bytes are not readable text.

    Zip names without the UTF-8 flag are CP437 by the spec, but most tools that omit the flag write
    UTF-8 (macOS, old Info-ZIP) or a local code page; a name that is neither ASCII nor UTF-8 would be
    stored as mojibake and never match its image, so it is refused.
    """
    if info.flag_bits & UTF8_FLAG or info.filename.isascii():
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None


def _entry_problem(info: zipfile.ZipInfo, limits: UploadLimits) -> str | None:
    name = entry_name(info)
    if name is None:
        return "entry name is not valid UTF-8; re-create the archive with UTF-8 names"
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path escapes the archive root"
    if ".." in parts:
        return "path with '..' escapes the archive root"
    if (problem := name_problem(parts[-1])) is not None:
        return problem
    if name.lower().endswith(ARCHIVE_SUFFIXES) and not volumes.is_volume(name):
        return "nested archives are not accepted"
    if info.flag_bits & 0x1:
        return "encrypted entries are not accepted"
    if info.file_size and (
        info.compress_size == 0 or info.file_size / info.compress_size > limits.max_zip_ratio
    ):
        return f"compression ratio above the limit of {limits.max_zip_ratio} (zip bomb?)"
    return None


def _ignored(info: zipfile.ZipInfo) -> bool:
    # Finder and editors add these; they are never data.
    path = PurePosixPath(info.filename.replace("\\", "/"))
    return info.is_dir() or path.parts[:1] == ("__MACOSX",) or path.name.startswith(".")


def _open_zip(blob: Blob) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(blob.open())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InvalidInput(
            f"{blob.name}: not a readable zip archive.",
            invalid_files=[{"file": blob.name, "reason": f"not a readable zip archive ({exc})"}],
        ) from exc


def _check_archive(blob: Blob, infos: list[zipfile.ZipInfo], limits: UploadLimits) -> None:
    if not infos:
        raise InvalidInput(
            f"{blob.name}: the archive holds no files.",
            invalid_files=[{"file": blob.name, "reason": "the archive holds no files"}],
        )
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
        raise InvalidInput(f"{blob.name}: {len(problems)} unsafe archive entries.", invalid_files=problems)


def _entry_blob(archive: zipfile.ZipFile, info: zipfile.ZipInfo, keep_paths: bool) -> Blob:
    path = (entry_name(info) or info.filename).replace("\\", "/")
    name = path if keep_paths else PurePosixPath(path).name
    return Blob(name, opener=lambda: archive.open(info), size=info.file_size)


def unzip(blob: Blob, limits: UploadLimits, *, keep_paths: bool = False) -> list[Blob]:
    """The entries of a zip archive as blobs read from the archive on demand, refusing unsafe entries;
    entries are named by their base name (with ``keep_paths``: their path). Every entry is read through
    once here (streamed, one chunk at a time), so a corrupt entry or a lying header fails the upload
    before anything is stored."""
    archive = _open_zip(blob)
    infos = [i for i in archive.infolist() if not _ignored(i)]
    _check_archive(blob, infos, limits)
    problems: list[dict[str, str]] = []
    files: list[Blob] = []
    for info in infos:
        entry = _entry_blob(archive, info, keep_paths)
        try:
            # zipfile stops at the declared size and checks the CRC at the end of the stream.
            with entry.open() as f:
                head = f.read(512)
                while f.read(1 << 20):
                    pass
        except _ENTRY_ERRORS as exc:
            problems.append({"file": info.filename, "reason": f"corrupt archive entry ({exc})"})
            continue
        # A gzipped NIfTI volume is the one compressed file taken (its reader stops at what its header
        # declares).
        nested = head[:4] == ZIP_MAGIC or is_other_archive("", head)
        if nested and not (volumes.is_volume(entry.name) and head[:2] == b"\x1f\x8b"):
            problems.append({"file": info.filename, "reason": "nested archives are not accepted"})
        files.append(entry)
    if problems:
        raise InvalidInput(
            f"{blob.name}: {len(problems)} unreadable or nested entries.", invalid_files=problems
        )
    return files


# How many buffers of an image's decoded size its decoding, checking and re-encoding may hold at once
# (the decoder's, one array, the 8-bit result and the encoder's): measured with ``python -m bench.attack``.
DECODE_COPIES = 3


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """Bytes of one decoded image of PIL ``mode`` (a palette is read as RGBA)."""
    if mode in ("P", "PA"):
        return width * height * 4
    described = ImageMode.getmode(mode)
    return width * height * len(described.bands) * np.dtype(described.typestr).itemsize


def drawn_bytes(width: int, height: int) -> int:
    """What drawing one 8-bit mask of this size and encoding it may hold."""
    return DECODE_COPIES * width * height


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    decoded: int  # bytes of the decoded image: width x height x channels x bytes per sample
    format: str | None  # PIL's name of the file format, or "DICOM"


def image_header(blob: Blob) -> Header | None:
    """Size, decoded bytes and format from the image header (no pixels decoded); None when no header
    reader takes it: the decoder then names the reason (a DICOM file of a kind not taken included)."""
    try:
        if dicom.is_dicom(blob.head(dicom.MAGIC_OFFSET + len(dicom.MAGIC))):
            with blob.open() as f:
                found = dicom.read_header(f, blob.name)
            return Header(found.columns, found.rows, found.decoded_bytes, "DICOM")
        with Image.open(blob.open()) as im:
            return Header(im.width, im.height, decoded_bytes(im.width, im.height, im.mode), im.format)
    except Exception:  # PIL and pydicom raise many types for garbage, and some TIFFs PIL cannot read
        return None


def declared_bytes(blob: Blob) -> int:
    """What decoding ``blob`` may hold at once, from its header alone: the file's own bytes (it is read
    into memory whole; a zip entry unpacked) plus ``DECODE_COPIES`` x its decoded size (width x height x
    channels x bytes per sample; a rescaled DICOM 8 bytes a sample, its float64 values). A header no
    decoder reads counts its file's bytes only."""
    header = image_header(blob)
    decoded = header.decoded if header else _tiff_bytes(blob)
    return blob.size + DECODE_COPIES * decoded


def _tiff_bytes(blob: Blob) -> int:
    """A TIFF's first page, decoded, as tifffile reads it (the reader for TIFFs PIL cannot open)."""
    try:
        with blob.open() as f, tifffile.TiffFile(f) as tif:  # closed here: tifffile's objects form a cycle
            page = tif.pages[0]
            return int(np.prod(page.shape)) * np.dtype(page.dtype).itemsize
    except Exception:  # not a TIFF either: the decoder names the reason
        return 0


def header_problem(blob: Blob, max_pixels: int) -> str | None:
    """Why an image is refused from its header alone (format, declared size), without decoding pixels.

    None when the header is acceptable or unreadable: the decoder then reports its own reason.
    """
    if volumes.is_volume(blob.name):
        return NO_VOLUMES
    header = image_header(blob)
    if header is None:
        return None
    if header.format not in IMAGE_FORMATS:
        return f"unsupported image format {header.format}; send {FORMAT_NAMES}"
    if header.width * header.height > max_pixels:
        return f"image of {header.width}x{header.height} pixels exceeds max_pixels={max_pixels}"
    return None


def name_key(name: str) -> str:
    """How file names are compared: case-insensitive, in one Unicode normal form (NFC)."""
    return unicodedata.normalize("NFC", name).lower()


def duplicate_names(blobs: list[Blob]) -> list[dict[str, str]]:
    """Problems for file names that occur more than once (case-insensitive) in one upload."""
    seen: set[str] = set()
    problems: list[dict[str, str]] = []
    for blob in blobs:
        key = name_key(blob.name)
        if key in seen:
            problems.append({"file": blob.name, "reason": "the same file name occurs twice in this upload"})
        seen.add(key)
    return problems


def reason(exc: ValueError, name: str) -> str:
    """The reason part of a ``gtcorrect.data`` error (its message starts with the file name)."""
    text = str(exc)
    return text[len(name) + 2 :] if text.startswith(f"{name}: ") else text
