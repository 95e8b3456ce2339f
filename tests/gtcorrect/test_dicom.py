"""2D DICOM images (gtcorrect.dicom, gtcorrect.data): windowing, inversion, RGB, and every refusal named."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

from gtcorrect.client import folder_files
from gtcorrect.data import MaskMode, load_folder, read_image, read_mask
from gtcorrect.dicom import is_dicom, read_header
from tests.support.dicom import dicom_bytes

# CT-like: Hounsfield units stored as unsigned 16 bit with RescaleIntercept -1024.
HU = np.array([[-1000, -500, -200, -160], [0, 40, 80, 240], [241, 400, 1000, 3000]], dtype=np.int64)
STORED = (HU + 1024).astype(np.uint16)
CT = {"RescaleSlope": 1, "RescaleIntercept": -1024}


def _window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR), written out independently, as 0..255."""
    fraction = (hu - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(fraction, 0.0, 1.0) * 255.0


@pytest.mark.parametrize(("center", "width"), [(40, 400), (-600, 1500), (0, 2)])
def test_rescale_then_window_to_8_bit(center: float, width: float) -> None:
    data = dicom_bytes(STORED, **CT, WindowCenter=center, WindowWidth=width)
    img = read_image(data, name="ct.dcm")
    assert img.shape == (3, 4, 1) and img.dtype == np.uint8
    np.testing.assert_allclose(img[:, :, 0], _window(HU, center, width), atol=1.0)


def test_first_of_several_windows_is_used() -> None:
    data = dicom_bytes(STORED, **CT, WindowCenter=[40, -600], WindowWidth=[400, 1500])
    np.testing.assert_allclose(read_image(data)[:, :, 0], _window(HU, 40, 400), atol=1.0)


def test_without_a_window_the_rescaled_range_is_stretched() -> None:
    slope = {"RescaleSlope": 2, "RescaleIntercept": -1024}  # the stretch sees slope x stored + intercept
    img = read_image(dicom_bytes(STORED, **slope))[:, :, 0]
    values = 2.0 * STORED - 1024
    expected = (values - values.min()) / (values.max() - values.min()) * 255.0
    np.testing.assert_allclose(img, expected, atol=0.5)
    assert (img.min(), img.max()) == (0, 255)


def test_8_bit_grey_without_rescale_or_window_is_kept_as_stored() -> None:
    grey = np.array([[3, 90], [180, 250]], dtype=np.uint8)
    np.testing.assert_array_equal(read_image(dicom_bytes(grey))[:, :, 0], grey)


def test_monochrome1_is_inverted_so_dense_is_bright() -> None:
    # The same stored values read 255 - x as MONOCHROME1 (low = white) and x as MONOCHROME2.
    mono2 = read_image(dicom_bytes(STORED, **CT, WindowCenter=40, WindowWidth=400))
    mono1 = read_image(dicom_bytes(STORED, photometric="MONOCHROME1", **CT, WindowCenter=40, WindowWidth=400))
    np.testing.assert_array_equal(mono1, 255 - mono2)
    grey = np.array([[0, 10], [200, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(
        read_image(dicom_bytes(grey, photometric="MONOCHROME1"))[:, :, 0], 255 - grey
    )


def test_rgb_stays_rgb() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img = read_image(dicom_bytes(rgb, photometric="RGB"), name="photo.dcm")
    np.testing.assert_array_equal(img, rgb)


def test_implicit_vr_little_endian_reads_the_same() -> None:
    explicit = read_image(dicom_bytes(STORED, **CT, WindowCenter=40, WindowWidth=400))
    implicit = read_image(
        dicom_bytes(STORED, syntax=ImplicitVRLittleEndian, **CT, WindowCenter=40, WindowWidth=400)
    )
    np.testing.assert_array_equal(implicit, explicit)


def test_multi_frame_is_refused_naming_the_file() -> None:
    volume = np.zeros((3, 4, 5), dtype=np.uint16)
    with pytest.raises(
        ValueError, match=r"^cine\.dcm: multi-frame DICOM \(3 frames\): send one 2D image per file"
    ):
        read_image(dicom_bytes(volume, frames=3), name="cine.dcm")


@pytest.mark.parametrize(
    ("syntax", "name"),
    [
        (JPEGBaseline8Bit, "JPEG Baseline \\(Process 1\\)"),
        (DeflatedExplicitVRLittleEndian, "Deflated Explicit VR Little Endian"),
    ],
)
def test_compressed_syntaxes_are_refused_naming_the_syntax(syntax: str, name: str) -> None:
    # Fake encapsulated pixel data: the refusal comes from the file meta, before any decoder is tried.
    fake = encapsulate([b"\xff\xd8\xff\xd9"]) if syntax == JPEGBaseline8Bit else None
    data = dicom_bytes(np.zeros((4, 5), np.uint8), syntax=syntax, pixel_data=fake)
    with pytest.raises(
        ValueError, match=rf"^scan\.dcm: DICOM transfer syntax {name} .*send uncompressed DICOM"
    ):
        read_image(data, name="scan.dcm")


def test_pixel_count_is_checked_from_the_header_before_decoding() -> None:
    # The header claims 60000 x 60000 pixels over 8 bytes of data: a decoder would complain about the
    # bytes; the refusal is the pixel count's.
    data = dicom_bytes(np.zeros((2, 2), np.uint16), Rows=60000, Columns=60000)
    with pytest.raises(
        ValueError, match=r"^huge\.dcm: image of 60000x60000 pixels exceeds max_pixels=100000000"
    ):
        read_image(data, name="huge.dcm")
    header = read_header(io.BytesIO(data), "huge.dcm")
    assert (header.rows, header.columns, header.decoded_bytes) == (60000, 60000, 60000 * 60000 * 2)
    small = dicom_bytes(np.zeros((10, 20), np.uint8))
    with pytest.raises(ValueError, match=r"^small\.dcm: image of 20x10 pixels exceeds max_pixels=199"):
        read_image(small, name="small.dcm", max_pixels=199)
    assert read_image(small, max_pixels=200).shape == (10, 20, 1)


@pytest.mark.parametrize("mode", ["index", "binary"])
def test_dicom_masks_are_refused(mode: MaskMode) -> None:
    data = dicom_bytes(np.zeros((4, 5), np.uint8))
    with pytest.raises(
        ValueError, match=r"^seg\.dcm: DICOM masks \(DICOM SEG\) are not supported; send PNG or TIFF"
    ):
        read_mask(data, num_classes=2, mode=mode, name="seg.dcm")


def test_a_png_is_never_taken_for_dicom() -> None:
    # A PNG whose text chunk puts "DICM" where a DICOM file has it stays a PNG.
    info = PngImagePlugin.PngInfo()
    info.add_text("k", "x" * 85 + "DICM" + "x" * 20)
    buffer = io.BytesIO()
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(grey).save(buffer, format="PNG", pnginfo=info)
    data = buffer.getvalue()
    assert data[128:132] == b"DICM" and not is_dicom(data)
    np.testing.assert_array_equal(read_image(data)[:, :, 0], grey)


def test_folder_loaders_and_the_client_take_dcm_files(tmp_path: Path) -> None:
    (tmp_path / "im").mkdir()
    (tmp_path / "gt").mkdir()
    (tmp_path / "im" / "case1.DCM").write_bytes(dicom_bytes(STORED, **CT, WindowCenter=40, WindowWidth=400))
    mask = np.zeros((3, 4), np.uint8)
    mask[1, 1:3] = 1
    Image.fromarray(mask).save(tmp_path / "gt" / "case1.png")
    images, masks, ids = load_folder(tmp_path / "im", tmp_path / "gt")
    assert ids == ["case1"] and images[0].shape == (3, 4, 1) and masks[0].tolist() == mask.tolist()
    assert [p.name for p in folder_files(tmp_path / "im")] == ["case1.DCM"]
    # A DICOM file among the masks is read, and refused with the reason.
    (tmp_path / "gt" / "case1.png").unlink()
    (tmp_path / "gt" / "case1.dcm").write_bytes(dicom_bytes(mask))
    with pytest.raises(ValueError, match="case1.dcm: DICOM masks"):
        load_folder(tmp_path / "im", tmp_path / "gt")
