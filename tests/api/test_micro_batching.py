"""Dynamic micro-batching of concurrent segmentation requests (app.services.inference.MicroBatcher):
same masks as one image at a time, several images in one forward pass when requests overlap, a lone
request never waits for the window, and a failing forward pass reaches every waiting request."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.services.inference import MicroBatcher
from gtcorrect.inference import Predictor
from tests.api.conftest import tiny_bundle


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (30 + i, 40 + 2 * i, 3), dtype=np.uint8) for i in range(n)]


def test_concurrent_requests_share_forward_passes_and_get_their_own_masks() -> None:
    predictor = Predictor(tiny_bundle())
    images = _images(16)
    alone = predictor.predict(images, batch_size=1)
    batcher = MicroBatcher(predictor, max_batch=8, window_s=0.2)
    start = threading.Barrier(16)

    def request(i: int) -> np.ndarray:
        start.wait()
        return batcher.segment(images[i]).mask

    try:
        with ThreadPoolExecutor(16) as pool:
            masks = list(pool.map(request, range(16)))
    finally:
        batcher.close()
    for mask, expected in zip(masks, alone, strict=True):
        np.testing.assert_array_equal(mask, expected.mask)
    assert sum(batcher.batches) == 16 and max(batcher.batches) > 1 and max(batcher.batches) <= 8


def test_a_lone_request_does_not_wait_for_the_window() -> None:
    batcher = MicroBatcher(Predictor(tiny_bundle()), max_batch=8, window_s=30.0)
    try:
        began = time.monotonic()
        batcher.segment(_images(1)[0])
        assert time.monotonic() - began < 10.0  # the window is 30 s: nobody else was coming
    finally:
        batcher.close()
    assert batcher.batches == [1]


def test_max_batch_one_runs_each_image_alone() -> None:
    batcher = MicroBatcher(Predictor(tiny_bundle()), max_batch=1, window_s=0.2)
    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(batcher.segment, _images(6)))
    finally:
        batcher.close()
    assert batcher.batches == [1] * 6


def test_a_failing_forward_pass_reaches_the_request_and_the_batcher_lives_on() -> None:
    predictor = Predictor(tiny_bundle())
    batcher = MicroBatcher(predictor, max_batch=4, window_s=0.0)
    forward = predictor.forward
    predictor.forward = lambda batch: (_ for _ in ()).throw(RuntimeError("device lost"))  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="device lost"):
            batcher.segment(_images(1)[0])
        predictor.forward = forward  # type: ignore[method-assign]
        assert batcher.segment(_images(1)[0]).mask.shape == (30, 40)
    finally:
        batcher.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(Predictor(tiny_bundle()), max_batch=0)


def test_a_closed_batcher_still_answers_requests_that_hold_it() -> None:
    predictor = Predictor(tiny_bundle())
    batcher = MicroBatcher(predictor, max_batch=4, window_s=0.0)
    batcher.close()
    batcher.close()  # twice is harmless
    image = _images(1)[0]
    np.testing.assert_array_equal(batcher.segment(image).mask, predictor.predict([image])[0].mask)
