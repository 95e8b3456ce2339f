"""Zip handling and the model cache, without services."""

from __future__ import annotations

import hashlib
import io
import tempfile
import threading
import uuid
import zipfile

import numpy as np
import pytest
from PIL import Image

from app.db.models import Model
from app.errors import InvalidInput, PayloadTooLarge, ServiceUnavailable
from app.services.inference import ModelCache
from app.services.uploads import (
    DECODE_COPIES,
    NO_VOLUMES,
    Blob,
    DecodeBudget,
    UploadLimits,
    declared_bytes,
    expand,
    header_problem,
    image_header,
    unzip,
)
from app.storage.local import LocalStore
from tests.api.conftest import tiny_bundle
from tests.support.dicom import dicom_bytes

LIMITS = UploadLimits(max_upload_bytes=100_000, max_zip_entries=3, max_zip_ratio=50, max_image_pixels=10_000)


def _zip(entries: dict[str, bytes]) -> Blob:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return Blob("upload.zip", buffer.getvalue())


def test_plain_files_pass_and_zips_are_unpacked_to_base_names() -> None:
    blobs = expand(
        [Blob("a.png", b"a"), _zip({"d/b.png": b"b", "d/": b"", "__MACOSX/d/._b.png": b"x"})], LIMITS
    )
    assert [(b.name, b.data) for b in blobs] == [("a.png", b"a"), ("b.png", b"b")]


def test_too_many_entries() -> None:
    with pytest.raises(InvalidInput, match="4 entries, above the limit of 3"):
        expand([_zip({f"{i}.png": b"x" for i in range(4)})], LIMITS)


def test_uncompressed_total_above_the_upload_limit_is_413() -> None:
    random_bytes = uuid.uuid4().bytes * 3_500  # 56 kB of poorly compressible data, twice
    with pytest.raises(PayloadTooLarge, match="uncompressed"):
        expand([_zip({"a.png": random_bytes + b"1", "b.png": random_bytes + b"2"})], LIMITS)


def test_compressed_upload_above_the_limit_is_413() -> None:
    with pytest.raises(PayloadTooLarge, match="100000"):
        expand([Blob("a.png", bytes(100_001))], LIMITS)


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("../x.png", b"x", "escapes"),
        ("C:/x.png", b"x", "escapes"),
        ("x.tar.gz", b"x", "nested"),
        ("x.png", bytes(60_000), "compression ratio"),
    ],
)
def test_unsafe_entries_are_named(name: str, data: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput) as info:
        expand([_zip({name: data})], LIMITS)
    assert info.value.extra["invalid_files"][0]["file"] == name
    assert needle in info.value.extra["invalid_files"][0]["reason"]


def test_broken_zip_is_named() -> None:
    with pytest.raises(InvalidInput, match="broken.zip: not a readable zip"):
        expand([Blob("broken.zip", b"PK\x03\x04garbage")], LIMITS)


def test_model_cache_keeps_the_most_recent(tmp_path: object) -> None:
    store = LocalStore(str(tmp_path))
    rows = []
    for i in range(3):
        key = f"p/models/{i}.pt"
        store.put(key, tiny_bundle().to_bytes())
        rows.append(Model(id=uuid.uuid4(), weights_key=key))
    cache = ModelCache(size=2)
    first = cache.get(store, rows[0])
    second = cache.get(store, rows[1])
    assert cache.get(store, rows[0]) is first  # a hit refreshes recency
    cache.get(store, rows[2])
    assert rows[0].id in cache and rows[2].id in cache and rows[1].id not in cache
    assert len(cache) == 2
    second._thread.join(timeout=10)  # an evicted model's batcher thread stops (without blocking the cache)
    assert not second._thread.is_alive()
    cache.clear()
    assert not first._thread.is_alive() and len(cache) == 0


def test_blobs_read_on_demand_from_the_upload_file_and_the_archive() -> None:
    spooled = tempfile.SpooledTemporaryFile(max_size=10)  # noqa: SIM115 - the request owns it
    spooled.write(_zip({"d/a.png": b"alpha", "b.png": b"beta" * 100}).data)
    upload = Blob.from_file("upload.zip", spooled)
    assert upload.size == spooled.tell() and upload.head(4) == b"PK\x03\x04"
    a, b = expand([upload], LIMITS)
    assert (a.name, a.size, b.name, b.size) == ("a.png", 5, "b.png", 400)
    assert b.data == b"beta" * 100 and a.data == b"alpha" and b.data == b"beta" * 100  # again, same bytes
    assert a.sha256() == hashlib.sha256(b"alpha").hexdigest()
    assert not spooled.closed  # reading a blob never closes the request's file


def test_decode_budget_makes_a_request_wait_then_refuses() -> None:
    budget = DecodeBudget(100, wait_s=0.2)
    with budget.hold(80):
        released = threading.Event()

        def later() -> None:
            with budget.hold(50):
                released.set()

        waiting = threading.Thread(target=later)
        waiting.start()
        assert not released.wait(0.05)  # 80 + 50 > 100: it waits for the first to finish
    waiting.join(1)
    assert released.is_set() and budget.used == 0
    with (
        budget.hold(100),
        pytest.raises(ServiceUnavailable, match="GTC_MAX_DECODE_BYTES=100"),
        budget.hold(1),
    ):
        pass
    assert budget.used == 0
    with budget.hold(10**9):  # one image larger than the budget takes all of it, never waits for ever
        assert budget.used == 100


def _saved(array: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("array", "fmt", "bytes_per_pixel"),
    [
        (np.zeros((40, 50, 3), np.uint8), "PNG", 3),
        (np.zeros((40, 50), np.uint8), "PNG", 1),
        (np.zeros((40, 50), np.uint16), "PNG", 2),
        (np.zeros((40, 50), np.float32), "TIFF", 4),
        (np.zeros((40, 50, 4), np.uint8), "PNG", 4),
    ],
)
def test_the_decode_budget_counts_bytes_not_pixels(array: np.ndarray, fmt: str, bytes_per_pixel: int) -> None:
    # A small file can decode to a lot: what it costs is counted from its header, bit depth and channels
    # included, plus the file's own bytes (read into memory whole).
    data = _saved(array, fmt, compression="tiff_deflate") if fmt == "TIFF" else _saved(array, fmt)
    assert declared_bytes(Blob("x", data)) == len(data) + DECODE_COPIES * 40 * 50 * bytes_per_pixel
    assert declared_bytes(Blob("garbage", b"not an image")) == len(b"not an image")


@pytest.mark.parametrize(
    ("elements", "bytes_per_sample"),
    [({}, 2), ({"RescaleSlope": 1, "RescaleIntercept": -1024}, 8)],  # rescaled: float64 values
)
def test_a_dicom_header_gives_size_budget_and_pixel_cap(
    elements: dict[str, int], bytes_per_sample: int
) -> None:
    data = dicom_bytes(np.zeros((40, 50), np.uint16), **elements)
    blob = _zip({"ct.dcm": data})
    [entry] = unzip(blob, LIMITS)  # read from the archive like any upload
    header = image_header(entry)
    assert header is not None and (header.width, header.height, header.format) == (50, 40, "DICOM")
    assert declared_bytes(entry) == len(data) + DECODE_COPIES * 40 * 50 * bytes_per_sample
    assert header_problem(entry, 2000) is None
    assert header_problem(entry, 1999) == "image of 50x40 pixels exceeds max_pixels=1999"


def test_a_dicom_file_of_a_kind_not_taken_is_left_to_the_decoder_to_name() -> None:
    # No header from it (the decoder refuses it by name), so only its file's bytes are counted.
    volume = dicom_bytes(np.zeros((3, 40, 50), np.uint16), frames=3)
    assert image_header(Blob("cine.dcm", volume)) is None
    assert header_problem(Blob("cine.dcm", volume), 10) is None
    assert declared_bytes(Blob("cine.dcm", volume)) == len(volume)


def test_a_nifti_volume_where_2d_images_go_is_refused_with_where_volumes_go() -> None:
    for name in ("case_001.nii.gz", "CASE_002.NII"):
        assert header_problem(Blob(name, b"\x1f\x8b anything"), 10**6) == NO_VOLUMES
    assert "images" in NO_VOLUMES and "/segment" in NO_VOLUMES
