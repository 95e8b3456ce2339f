"""Prediction at the original size, RLE and PNG export (gtcorrect.inference)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from gtcorrect import inference
from gtcorrect.config import NetConfig, TrainConfig
from gtcorrect.data import mask_to_png, prepare_images, restore_probabilities
from gtcorrect.export import mask_to_rle, rle_to_mask
from gtcorrect.inference import (
    Prediction,
    Predictor,
    png_to_mask,
    predict,
    reduce_large,
)
from gtcorrect.model import ModelBundle
from gtcorrect.networks import build_network
from gtcorrect.types import LabelMap

TINY = NetConfig(channels=(4, 8), strides=(2,), num_res_units=0)


def _bundle(in_channels: int, label_map: LabelMap = LabelMap(), seed: int = 0) -> ModelBundle:
    torch.manual_seed(seed)
    net = build_network(TINY, in_channels, label_map.num_classes)
    config = TrainConfig(image_size=32, net=TINY)
    return ModelBundle(
        config=config, label_map=label_map, in_channels=in_channels, state_dict=net.state_dict()
    )


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_predict_returns_original_sizes_for_any_channels(in_channels: int) -> None:
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (40, 70, 3), dtype=np.uint8),
        rng.integers(0, 256, (17, 23, 1), dtype=np.uint8),
        rng.integers(0, 256, (32, 32), dtype=np.uint8),
    ]
    preds = Predictor(_bundle(in_channels)).predict(images, batch_size=2)
    assert len(preds) == 3
    for img, p in zip(images, preds, strict=True):
        h, w = img.shape[:2]
        assert p.probabilities.shape == (2, h, w) and p.probabilities.dtype == np.float32
        assert p.mask.shape == (h, w) and p.mask.dtype == np.uint8
        np.testing.assert_allclose(p.probabilities.sum(axis=0), 1.0, atol=1e-4)
        np.testing.assert_array_equal(p.mask, p.probabilities.argmax(axis=0))
        assert 0.5 <= p.mean_confidence <= 1.0


def test_predict_matches_network_and_is_batch_independent() -> None:
    bundle = _bundle(3, LabelMap(("bg", "a", "b")), seed=1)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    one = predict(bundle, images, batch_size=1)
    many = predict(bundle, images, batch_size=8)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    # at the training size no resizing happens: probabilities equal the network's own softmax
    x = torch.from_numpy(prepare_images(images, size=32, channels=3))
    with torch.no_grad():
        ref = torch.softmax(bundle.build()(x), dim=1).numpy()
    np.testing.assert_allclose(one[0].probabilities, ref[0], atol=1e-5)


def test_flips_average_the_network_over_the_image_and_its_flips_put_back() -> None:
    bundle = _bundle(3, LabelMap(("bg", "a", "b")), seed=2)
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    flipped = predict(bundle, images, flips=True)
    x = torch.from_numpy(prepare_images(images, size=32, channels=3))
    net = bundle.build()
    with torch.no_grad():
        views = [
            torch.softmax(net(x), 1),
            torch.softmax(net(x.flip(-1)), 1).flip(-1),
            torch.softmax(net(x.flip(-2)), 1).flip(-2),
            torch.softmax(net(x.flip(-2, -1)), 1).flip(-2, -1),
        ]
    ref = torch.stack(views).mean(0).numpy()
    for i, p in enumerate(flipped):
        np.testing.assert_allclose(p.probabilities, ref[i], atol=1e-5)
    # An untrained network is not flip-symmetric: the average differs from the plain answer.
    assert not np.allclose(predict(bundle, images)[0].probabilities, flipped[0].probabilities, atol=1e-4)


def test_predict_after_bundle_round_trip_and_bad_input() -> None:
    bundle = ModelBundle.from_bytes(_bundle(1).to_bytes())
    img = np.zeros((10, 12, 3), np.uint8)
    assert predict(bundle, [img])[0].mask.shape == (10, 12)
    with pytest.raises(ValueError, match=r"image 0 must be .*got shape \(10, 12, 4\)"):
        predict(bundle, [np.zeros((10, 12, 4), np.uint8)])


MASK = np.array([[0, 1, 1], [0, 1, 0], [2, 2, 0], [1, 0, 0]], np.int64)


def test_rle_hand_computed_column_major() -> None:
    # column-major flat of MASK == 1: col0 0,0,0,1; col1 1,1,0,0; col2 1,0,0,0
    rle = mask_to_rle(MASK, 1)
    assert rle == {"size": [4, 3], "counts": [3, 3, 2, 1, 3]}
    starts_with_one = mask_to_rle(np.ones((2, 2), np.int64), 1)
    assert starts_with_one["counts"] == [0, 4]


@pytest.mark.parametrize("cls", [0, 1, 2, 5])
def test_rle_round_trip(cls: int) -> None:
    rng = np.random.default_rng(cls)
    m = rng.integers(0, 3, (13, 17))
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(m, cls)), (m == cls).astype(np.uint8))


def test_rle_bad_counts_raise() -> None:
    with pytest.raises(ValueError, match="RLE counts sum to 5, expected H\\*W = 6"):
        rle_to_mask({"size": [2, 3], "counts": [2, 3]})


def test_png_round_trip_binary_is_visible() -> None:
    binary = (MASK > 0).astype(np.int64)
    data = mask_to_png(binary, LabelMap())
    raw = np.asarray(Image.open(io.BytesIO(data)))
    assert raw.dtype == np.uint8 and set(np.unique(raw).tolist()) == {0, 255}
    np.testing.assert_array_equal(png_to_mask(data, LabelMap()), binary)


def test_png_round_trip_multiclass_and_range_check() -> None:
    lm = LabelMap(("bg", "a", "b"))
    data = mask_to_png(MASK, lm)
    assert set(np.unique(np.asarray(Image.open(io.BytesIO(data)))).tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(png_to_mask(data, lm), MASK)
    with pytest.raises(ValueError, match=r"mask values 0..2 lie outside 0..1"):
        mask_to_png(MASK, LabelMap())


@pytest.mark.parametrize("k", [2, 3])  # two classes take the foreground-only path
def test_mask_restored_band_by_band_equals_the_whole_restore(monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    rng = np.random.default_rng(3)
    low = rng.dirichlet(np.ones(k), size=(32, 32)).transpose(2, 0, 1).astype(np.float32)  # (K, S, S)
    size = (301, 157)
    whole = restore_probabilities(low, size)
    monkeypatch.setattr(inference, "BAND_BYTES", k * 4 * 157 * 7)  # 7 rows a band: 43 bands
    p = Prediction.from_low(low, size)
    np.testing.assert_array_equal(p.mask, whole.argmax(axis=0))
    assert p.mean_confidence == pytest.approx(float(whole.max(axis=0).mean()), rel=1e-5)
    np.testing.assert_allclose(p.foreground_probability(), 1.0 - whole[0], atol=1e-5)


def test_large_images_are_reduced_on_uint8_before_resizing(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    small = rng.integers(0, 256, (100, 90, 3), dtype=np.uint8)
    assert reduce_large(small, 32) is small  # short side under 4 x 32
    big = np.repeat(np.repeat(small, 7, axis=0), 7, axis=1)  # 700 x 630
    reduced = reduce_large(big, 32)
    assert reduced.dtype == np.uint8 and reduced.shape == (78, 70, 3)  # factor 630 // 64 = 9, rounded up
    grey = reduce_large(big[:, :, :1], 32)
    assert grey.shape == (78, 70, 1)
    # The prediction keeps the original size and barely moves on a natural (smooth) image.
    yy, xx = np.mgrid[0:700, 0:630]
    smooth = np.stack([(127 + 120 * np.sin(xx / 60.0 + c) * np.cos(yy / 80.0)) for c in range(3)], -1)
    smooth = smooth.astype(np.uint8)
    bundle = _bundle(3)
    (reduced_first,) = predict(bundle, [smooth])
    monkeypatch.setattr(inference, "reduce_large", lambda img, size: img)
    (whole,) = predict(bundle, [smooth])
    assert reduced_first.mask.shape == whole.mask.shape == (700, 630)
    np.testing.assert_allclose(reduced_first.low, whole.low, atol=0.02)
