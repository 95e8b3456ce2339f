"""Reading images/masks, the training-size policy and folder pairing (gtcorrect.data)."""

from __future__ import annotations

import gc
import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from gtcorrect.data import (
    load_folder,
    normalise,
    prepare,
    prepare_images,
    read_image,
    read_mask,
    restore_mask,
    restore_probabilities,
    split_indices,
    to_channels,
)
from gtcorrect.types import LabelMap

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared/data beside the checkout


def _encode(arr: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.int64)


RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (20, 30), dtype=np.uint8)


@pytest.mark.parametrize(
    ("data", "shape"),
    [
        (_encode(GREY, "PNG"), (20, 30, 1)),
        (_encode(RGB, "PNG"), (20, 30, 3)),
        (_encode(np.dstack([RGB, np.full((20, 30), 7, np.uint8)]), "PNG"), (20, 30, 3)),
        (_encode(RGB, "JPEG"), (20, 30, 3)),
        (_encode(RGB, "TIFF"), (20, 30, 3)),
    ],
)
def test_read_image_formats(data: bytes, shape: tuple[int, int, int]) -> None:
    img = read_image(data, name="x")
    assert img.shape == shape and img.dtype == np.uint8


def test_read_image_lossless_values_and_alpha_dropped() -> None:
    rgba = np.dstack([RGB, np.zeros((20, 30), np.uint8)])
    np.testing.assert_array_equal(read_image(_encode(rgba, "PNG")), RGB)
    np.testing.assert_array_equal(read_image(_encode(GREY, "PNG"))[:, :, 0], GREY)


def test_read_image_palette_and_16bit_tiff() -> None:
    pal = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert read_image(buf.getvalue()).shape == (20, 30, 3)
    buf = io.BytesIO()
    tifffile.imwrite(buf, (GREY.astype(np.uint16) * 200))
    img = read_image(buf.getvalue())
    assert img.shape == (20, 30, 1) and img.max() == 255 and img.min() == 0


def test_wide_data_is_stretched_band_by_band_as_a_whole() -> None:
    # 1500 rows of 3000 float32 pixels: several bands of rows, one stretch over the whole image's range.
    data = np.random.default_rng(0).normal(100.0, 30.0, size=(1500, 3000)).astype(np.float32)
    buf = io.BytesIO()
    tifffile.imwrite(buf, data)
    lo, hi = float(data.min()), float(data.max())
    expected = np.round((data.astype(np.float64) - lo) / (hi - lo) * 255.0).astype(np.uint8)
    img = read_image(buf.getvalue())
    assert img.flags.writeable
    np.testing.assert_array_equal(img[:, :, 0], expected)


def test_a_decoded_tiff_lets_its_bytes_go_without_the_garbage_collector() -> None:
    # tifffile's objects form a reference cycle; a 200 MB upload's bytes stayed in the API until the
    # collector next ran (the attack replay saw +238 MB held after a zip entry's TIFF).
    def decode_one() -> None:
        buf = io.BytesIO()
        tifffile.imwrite(buf, np.ones((1000, 1000), np.float32))  # 4 MB, made and dropped in here
        read_image(buf.getvalue())

    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        decode_one()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert held < 1_000_000, held


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        read_image(bad)
    with pytest.raises(ValueError, match="missing.png: cannot read"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="big.png: image of 30x20 pixels exceeds max_pixels=100"):
        read_image(_encode(RGB, "PNG"), name="big.png", max_pixels=100)


def test_read_mask_binary_threshold_and_invert() -> None:
    grey = np.array([[0, 100, 127, 128, 255]], np.uint8)
    png = _encode(grey, "PNG")
    np.testing.assert_array_equal(read_mask(png, num_classes=2, mode="binary"), [[0, 0, 0, 1, 1]])
    np.testing.assert_array_equal(
        read_mask(png, num_classes=2, mode="binary", invert=True), [[1, 1, 1, 0, 0]]
    )


def test_read_mask_index_and_0_255() -> None:
    idx = np.array([[0, 1, 2, 1]], np.uint8)
    out = read_mask(_encode(idx, "PNG"), num_classes=3)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, idx)
    np.testing.assert_array_equal(
        read_mask(_encode(np.array([[0, 255]], np.uint8), "PNG"), num_classes=2), [[0, 1]]
    )


def test_read_mask_index_out_of_range_names_values() -> None:
    with pytest.raises(ValueError, match=r"m.png: mask values \[3, 7\] lie outside the label map 0..2"):
        read_mask(_encode(np.array([[0, 3, 7]], np.uint8), "PNG"), num_classes=3, name="m.png")


def test_to_channels() -> None:
    grey = np.full((2, 2, 1), 10, np.uint8)
    assert to_channels(grey, 3).shape == (2, 2, 3)
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[..., 1] = 100
    assert to_channels(rgb, 1)[0, 0, 0] == round(0.587 * 100)
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        to_channels(grey, 2)


def test_normalise_zscore_per_channel() -> None:
    x = np.random.default_rng(1).random((3, 16, 16))
    y = normalise(x)
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(1, 2)), 1, atol=1e-4)
    assert np.isfinite(normalise(np.zeros((1, 4, 4)))).all()  # constant image must not divide by 0


def test_restore_mask_is_smooth_and_at_original_size() -> None:
    disc = _disc(32, 32, 16, 16, 10)
    restored = restore_mask(disc, (100, 60))
    assert restored.shape == (100, 60)
    # The continuous shape behind the 32 px disc is an ellipse at 100 x 60; a smooth restore follows it
    # more closely than nearest-neighbour upsampling, which copies the staircase.
    yy, xx = np.mgrid[:100, :60]
    sy, sx = (yy + 0.5) / 100 * 32, (xx + 0.5) / 60 * 32
    ellipse = (sy - 16.5) ** 2 + (sx - 16.5) ** 2 <= 10.2**2
    nearest = disc[sy.astype(int), sx.astype(int)]
    assert np.count_nonzero(restored != ellipse) < np.count_nonzero(nearest != ellipse)
    assert np.mean(restored == ellipse) > 0.98
    prob = restore_probabilities(np.stack([1.0 - disc, disc]).astype(np.float32), (64, 64))
    assert prob.shape == (2, 64, 64)
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-5)


def test_prepare_shapes_channels_and_sizes() -> None:
    imgs = [
        RNG.integers(0, 256, (40, 50, 1), dtype=np.uint8),
        RNG.integers(0, 256, (30, 30, 3), dtype=np.uint8),
    ]
    masks = [_disc(40, 50, 20, 25, 8), _disc(30, 30, 15, 15, 5)]
    data = prepare(imgs, masks, ["a", "b"], label_map=LabelMap(), size=32)
    assert data.images.shape == (2, 3, 32, 32) and data.images.dtype == np.float32
    assert data.masks.shape == (2, 32, 32) and data.masks.dtype == np.int64
    assert set(np.unique(data.masks)) == {0, 1}
    assert data.original_sizes == [(40, 50), (30, 30)]
    assert prepare(imgs[:1], masks[:1], ["a"], label_map=LabelMap(), size=16).images.shape[1] == 1
    assert prepare_images(imgs, size=16, channels=1).shape == (2, 1, 16, 16)


def test_prepare_size_mismatch_names_the_id() -> None:
    with pytest.raises(ValueError, match="b7: image size 30x20 differs from mask size 31x20"):
        prepare([RGB], [np.zeros((20, 31), np.int64)], ["b7"], label_map=LabelMap(), size=16)


def _write(path: Path, arr: np.ndarray) -> None:
    path.write_bytes(_encode(arr, "PNG"))


def test_load_folder_pairs_case_insensitive_with_prefix(tmp_path: Path) -> None:
    (tmp_path / "im").mkdir()
    (tmp_path / "gt").mkdir()
    _write(tmp_path / "im" / "B01.png", GREY)
    _write(tmp_path / "im" / "c2.PNG", GREY)
    _write(tmp_path / "gt" / "seg_b01.png", np.where(GREY > 128, 0, 255).astype(np.uint8))
    _write(tmp_path / "gt" / "SEG_C2.png", np.full((20, 30), 255, np.uint8))
    images, masks, ids = load_folder(
        tmp_path / "im", tmp_path / "gt", mask_prefix="seg_", invert=True, mask_mode="binary"
    )
    assert ids == ["B01", "c2"]
    np.testing.assert_array_equal(masks[0], (GREY > 128).astype(np.int64))
    assert masks[1].sum() == 0 and images[0].shape == (20, 30, 1)


def test_load_folder_unpaired_files_are_listed(tmp_path: Path) -> None:
    (tmp_path / "im").mkdir()
    (tmp_path / "gt").mkdir()
    _write(tmp_path / "im" / "a.png", GREY)
    _write(tmp_path / "im" / "lonely.png", GREY)
    _write(tmp_path / "gt" / "a.png", GREY * 0)
    _write(tmp_path / "gt" / "orphan.png", GREY * 0)
    with pytest.raises(
        ValueError, match=r"images without a mask \['lonely.png'\]; masks without an image \['orphan"
    ):
        load_folder(tmp_path / "im", tmp_path / "gt")


def test_split_indices_partition_and_determinism() -> None:
    tr, va, te = split_indices(100, seed=3)
    assert (len(tr), len(va), len(te)) == (70, 10, 20)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(100))
    np.testing.assert_array_equal(split_indices(100, seed=3)[0], tr)
    assert not np.array_equal(split_indices(100, seed=4)[0], tr)
    with pytest.raises(ValueError, match="summing to 1"):
        split_indices(10, (0.5, 0.5, 0.5))


@pytest.mark.skipif(not (DATA / "bu-bil").is_dir(), reason="shared data not present")
def test_real_data_kvasir_and_bubil() -> None:
    kv = DATA / "kvasir-seg"
    name = sorted((kv / "masks").iterdir())[0].name
    img = read_image(kv / "images" / name)
    mask = read_mask(kv / "masks" / name, num_classes=2, mode="binary")
    assert img.shape[2] == 3 and img.shape[:2] == mask.shape
    assert 0.0 < mask.mean() < 1.0
    d1 = DATA / "bu-bil" / "BU-BIL_Dataset1"
    cell = read_mask(d1 / "GoldStandard" / "seg_B01.png", num_classes=2, mode="binary", invert=True)
    assert 0.0 < cell.mean() < 0.5  # the cell is the minority and was black in the file


def _png16(values: list[list[int]]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.array(values, np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def test_16bit_index_mask_keeps_values() -> None:
    np.testing.assert_array_equal(read_mask(_png16([[0, 1, 2, 2]]), num_classes=3), [[0, 1, 2, 2]])
    # Values a 16-bit file can hold are class indices as stored, never stretched to 8 bit: 0/1000 is
    # refused like 0/5 in an 8-bit file (it used to become 0/255 and pass as a binary mask).
    with pytest.raises(ValueError, match=r"mask values \[1000\] lie outside the label map 0..1"):
        read_mask(_png16([[0, 1000]]), num_classes=2)
    np.testing.assert_array_equal(read_mask(_png16([[0, 255]]), num_classes=2), [[0, 1]])  # as in 8 bit
    # The same indices in the type asked for (uploads keep masks as uint8: an eighth of int64's memory).
    small = read_mask(_png16([[0, 1, 2, 2]]), num_classes=3, dtype=np.uint8)
    assert small.dtype == np.uint8 and small.tolist() == [[0, 1, 2, 2]]
    inverted = read_mask(_png16([[0, 255]]), num_classes=2, invert=True, dtype=np.uint8)
    assert inverted.tolist() == [[1, 0]]
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.array([[0.0, 0.5]], np.float32))
    with pytest.raises(ValueError, match="integer class indices, got float32"):
        read_mask(buf.getvalue(), num_classes=2)
