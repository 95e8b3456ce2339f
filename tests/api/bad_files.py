"""Bad files for the validation catalogue, built in memory (a few kB each), and multipart helpers."""

from __future__ import annotations

import io
import struct
import tarfile
import warnings
import zipfile
import zlib
from typing import Any

import numpy as np
from PIL import Image

from tests.api.conftest import mask_png


def zip_of(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip with entries in order; a repeated name is written twice (zipfile only warns)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(buffer, "w", compression=method) as archive:
            for name, data in entries:
                archive.writestr(zipfile.ZipInfo(name) if "\\" in name else name, data)
    return buffer.getvalue()


def zip_with_raw_name(raw: bytes, data: bytes) -> bytes:
    """A zip whose entry name is ``raw`` bytes with the UTF-8 flag unset (a legacy code page)."""
    placeholder = "N" * len(raw)
    return zip_of([(placeholder, data)]).replace(placeholder.encode(), raw)


def png_declaring(width: int, height: int) -> bytes:
    """A 66-byte PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\x00"))  # one row's worth: the header is what matters
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def encoded(fmt: str, height: int = 16, width: int = 16) -> bytes:
    """An all-zero grey (height, width) image in Pillow format ``fmt`` (GIF, WEBP, BMP...)."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def tar_of(name: str, data: bytes) -> bytes:
    """An uncompressed tar holding one file (10 kB: tar pads to whole records)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def two_symbol_noise(n: int) -> bytes:
    """``n`` bytes that deflate about 6x: below the ratio limit, but large once unpacked."""
    return bytes(np.random.default_rng(0).choice([65, 66], size=n).astype(np.uint8))


GOOD_MASK = mask_png(32, 48)
PNG = GOOD_MASK  # a valid image and a valid mask for img01, so each case differs by its fault only


def parts(entries: list[tuple[str, bytes]]) -> list[Any]:
    """Multipart parts under the ``files`` field."""
    return [("files", (name, data, "application/octet-stream")) for name, data in entries]


def as_zip(entries: list[tuple[str, bytes]], name: str = "upload.zip") -> list[Any]:
    """One multipart part: a zip of ``entries``."""
    return parts([(name, zip_of(entries))])
