"""Bombs inside valid-looking files: what decoding them costs the API."""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image

from bench.attack.target import DECODE_BACK_MB, DECODE_PEAK_MB, MB, Row, Target, png_bytes
from bench.load_setup import World
from bench.memory import measure
from tests.support.dicom import dicom_bytes
from tests.support.volumes import nifti, nifti_bytes


def _tiff(array: np.ndarray, compression: str | None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="TIFF", compression=compression)
    return buffer.getvalue()


def float_tiff(side: int) -> bytes:
    """A ``side`` x ``side`` float32 TIFF of zeros, deflated: a few hundred kB for 50 MP."""
    return _tiff(np.zeros((side, side), dtype=np.float32), "tiff_deflate")


def zip_bomb_entry(side: int, ratio: float) -> tuple[bytes, int]:
    """A zip of one uncompressed ``side`` x ``side`` float32 TIFF with sparse noise, so that it deflates
    at about ``ratio`` (under the limit of 100): (archive, entry bytes)."""
    pixels = np.zeros(side * side, dtype=np.float32)
    rng = np.random.default_rng(0)
    noisy = rng.choice(pixels.size, size=int(pixels.size / ratio / 1.15), replace=False)
    pixels[noisy] = rng.random(noisy.size, dtype=np.float32)
    data = _tiff(pixels.reshape(side, side), None)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.tif", data)
    return buffer.getvalue(), len(data)


def gzip_bomb_volume(padding: int) -> bytes:
    """A valid 32^3 volume with ``padding`` bytes of zeros after its voxels, gzipped as one stream
    (compressed a chunk at a time: the padding is never held whole)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    chunks = [packer.compress(nifti(np.zeros((32, 32, 32), dtype=np.int16)).to_bytes())]
    zeros = bytes(1 << 20)
    for _ in range(padding // len(zeros)):
        chunks.append(packer.compress(zeros))
    return b"".join([*chunks, packer.flush()])


def nifti_header_bomb(edge: int) -> bytes:
    """A gzipped NIfTI-1 file of one voxel whose header declares ``edge``^3 int16 voxels."""
    raw = bytearray(nifti(np.zeros((1, 1, 1), dtype=np.int16)).to_bytes())
    raw[42:48] = np.array([edge, edge, edge], dtype="<i2").tobytes()  # dim[1..3]; int16, so at most 32767
    return gzip.compress(bytes(raw), mtime=0)


def decode(t: Target, world: World, settle_s: float) -> list[Row]:
    client = httpx.Client(base_url=world.base_url, headers=world.auth, timeout=600)
    images = f"/v1/datasets/{world.dataset_id}/images"
    rows = []

    def row(
        name: str,
        sent: str,
        send: Callable[[], httpx.Response],
        size: int,
        answer: Callable[[int], str] = str,
    ) -> None:
        case = measure(name, sent, t.pid, send, size, settle_s)
        met = case.peak_growth_mb < DECODE_PEAK_MB and case.returned_to_mb < DECODE_BACK_MB
        rows.append(
            Row(
                name,
                sent,
                f"{answer(case.status)} in {case.seconds:.1f} s",
                f"+{case.peak_growth_mb:.0f} MB peak, {case.returned_to_mb:+.0f} MB 5 s after",
                f"< {DECODE_PEAK_MB:.0f} MB, back within {DECODE_BACK_MB:.0f} MB",
                met,
            )
        )

    side = 7071  # 50 MP, the largest image accepted
    archive, entry = zip_bomb_entry(side, 80)
    zipped = {"files": ("bomb.zip", archive, "application/zip")}
    ratio = entry / len(archive)
    sent = f"a zip of one uncompressed float32 TIFF: {entry / MB:.0f} MB unpacked, ratio {ratio:.0f}"
    row("zip entry bomb", sent, lambda: client.post(images, files=zipped), len(archive))

    tiff = float_tiff(side)
    one = {"files": ("float.tif", tiff, "image/tiff")}
    sent = f"a {side}x{side} float32 TIFF ({len(tiff) / 1024:.0f} kB)"
    row("50 MP float TIFF", sent, lambda: client.post(images, files=one), len(tiff))

    # A mask needs its sample: a 7000x7000 image first (measured too: the largest image accepted).
    big = png_bytes(np.zeros((7000, 7000, 3), dtype=np.uint8))
    sample = {"files": ("big7000.png", big, "image/png")}
    sent = f"a black 7000x7000 RGB PNG ({len(big) / 1024:.0f} kB)"
    row("7000x7000 RGB image", sent, lambda: client.post(images, files=sample), len(big))
    mask = png_bytes(np.zeros((7000, 7000), dtype=np.uint16))
    masks = {"files": ("big7000.png", mask, "image/png")}
    batches = f"/v1/datasets/{world.dataset_id}/annotation-batches"
    sent = f"a 16-bit 7000x7000 mask PNG ({len(mask) / 1024:.0f} kB) for that image"
    row("16-bit mask", sent, lambda: client.post(batches, data={"annotator": "bomb"}, files=masks), len(mask))

    def one_upload(i: int) -> httpx.Response:
        with httpx.Client(base_url=world.base_url, headers=world.auth, timeout=600) as c:
            return c.post(images, files={"files": (f"float{i}.tif", tiff, "image/tiff")})

    answers: list[httpx.Response] = []

    def four_at_once() -> httpx.Response:
        with ThreadPoolExecutor(4) as pool:
            answers.extend(pool.map(one_upload, range(4)))
        return answers[0]

    sent = f"four concurrent uploads of the {side}x{side} float32 TIFF"
    statuses = lambda _: "/".join(str(a.status_code) for a in answers)  # noqa: E731
    row("four 50 MP at once", sent, four_at_once, 4 * len(tiff), statuses)

    # DICOM: a real 50 MP 16-bit CT slice, rescaled (float64 values) and windowed, and a header that lies.
    ct = dicom_bytes(
        np.zeros((side, side), dtype=np.uint16),
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=40,
        WindowWidth=400,
    )
    sent = f"a {side}x{side} 16-bit CT DICOM, rescaled and windowed ({len(ct) / MB:.0f} MB)"
    dcm = {"files": ("ct.dcm", ct, "application/dicom")}
    row("50 MP 16-bit DICOM", sent, lambda: client.post(images, files=dcm), len(ct))
    liar = dicom_bytes(np.zeros((2, 2), dtype=np.uint16), Rows=60000, Columns=60000)
    sent = f"a DICOM whose header declares 60000x60000 pixels ({len(liar)} bytes)"
    lying = {"files": ("liar.dcm", liar, "application/dicom")}
    row("DICOM header bomb", sent, lambda: client.post(images, files=lying), len(liar))

    # NIfTI: the largest volume accepted (50 M voxels, 16 bit), a gzip bomb behind a small volume's
    # header, and a header that declares 30000^3 voxels.
    edge = 368  # 368^3 = 49.8 M voxels
    big_volume = nifti_bytes(np.zeros((edge, edge, edge), dtype=np.int16))
    sent = f"a {edge}^3 16-bit NIfTI volume ({len(big_volume) / 1024:.0f} kB gzipped, {edge} slices)"
    nii = {"files": ("big.nii.gz", big_volume, "application/gzip")}
    row("50 M-voxel NIfTI", sent, lambda: client.post(images, files=nii), len(big_volume))
    bomb = gzip_bomb_volume(1 << 31)
    sent = f"a 32^3 NIfTI volume followed by 2 GB of zeros, gzipped ({len(bomb) / MB:.1f} MB)"
    bombed = {"files": ("bomb.nii.gz", bomb, "application/gzip")}
    row("NIfTI gzip bomb", sent, lambda: client.post(images, files=bombed), len(bomb))
    header = nifti_header_bomb(30000)
    sent = f"a NIfTI header declaring 30000^3 voxels ({len(header)} bytes)"
    lying_volume = {"files": ("liar.nii.gz", header, "application/gzip")}
    row("NIfTI header bomb", sent, lambda: client.post(images, files=lying_volume), len(header))

    query = png_bytes(np.zeros((side, side, 3), dtype=np.uint8))
    segment = f"/v1/models/{world.model_id}/segment"
    sent = f"segment a {side}x{side} PNG asking for format=npy"
    row(
        "segment npy 50 MP",
        sent,
        lambda: client.post(segment, params={"format": "npy"}, files={"file": ("q.png", query, "image/png")}),
        len(query),
    )
    client.close()
    return rows
