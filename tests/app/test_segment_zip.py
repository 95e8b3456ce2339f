"""segment-batch's archive (app.services.inference.segment_zip): images go through the network several
at a time and each mask is the one the image alone gets."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import numpy as np
import pytest
from PIL import Image

from app.errors import InvalidInput
from app.services.inference import encode, segment_zip
from app.services.uploads import Blob, UploadLimits
from gtcorrect.inference import Predictor
from tests.api.conftest import image_png, tiny_bundle

LIMITS = UploadLimits(
    max_upload_bytes=1 << 30, max_zip_entries=100, max_zip_ratio=100, max_image_pixels=1 << 24
)
SIZES = [(37, 61), (20, 24), (64, 48), (33, 33), (50, 71)]  # five images: batches of 2, 2 and 1


class CountingPredictor(Predictor):
    def __init__(self) -> None:
        super().__init__(tiny_bundle())
        self.batches: list[int] = []

    def forward(self, batch: np.ndarray, flips: bool = False) -> np.ndarray:
        self.batches.append(len(batch))
        return super().forward(batch, flips)


@pytest.mark.parametrize("fmt", ["png", "probabilities"])
def test_batched_masks_are_each_image_s_own(fmt: str) -> None:
    predictor = CountingPredictor()
    blobs = [Blob(f"img{i}.png", image_png(h, w, i)) for i, (h, w) in enumerate(SIZES)]
    with segment_zip(predictor, blobs, LIMITS, uuid.UUID(int=1), fmt, batch_size=2) as out:
        archive = zipfile.ZipFile(io.BytesIO(out.read()))
    assert predictor.batches == [2, 2, 1]
    for i, (h, w) in enumerate(SIZES):
        image = np.asarray(Image.open(io.BytesIO(blobs[i].data)))
        alone = encode(predictor.predict([image], batch_size=1)[0], predictor, uuid.UUID(int=1), fmt).body
        assert alone is not None
        got = np.asarray(Image.open(io.BytesIO(archive.read(f"img{i}.png"))))
        assert got.shape == (h, w)
        np.testing.assert_array_equal(got, np.asarray(Image.open(io.BytesIO(alone))))
    summary = json.loads(archive.read("predictions.json"))["images"]
    assert [s["file"] for s in summary] == [b.name for b in blobs]
    assert [(s["height"], s["width"]) for s in summary] == SIZES


def test_bad_files_are_all_named_and_nothing_is_answered() -> None:
    blobs = [Blob("a.png", image_png(8, 8)), Blob("x.png", b"garbage"), Blob("b.png", image_png(8, 8))]
    blobs.append(Blob("y.png", b"nope"))
    with pytest.raises(InvalidInput) as caught:
        segment_zip(Predictor(tiny_bundle()), blobs, LIMITS, uuid.UUID(int=1), "png", batch_size=1)
    assert [f["file"] for f in caught.value.extra["invalid_files"]] == ["x.png", "y.png"]
    with pytest.raises(ValueError, match="batch_size"):
        segment_zip(Predictor(tiny_bundle()), blobs[:1], LIMITS, uuid.UUID(int=1), "png", batch_size=0)
