"""Export formats (gtcorrect.export): names, nnU-Net's dataset.json, COCO documents, review overlays."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from gtcorrect.export import (
    GIVEN_COLOUR,
    PROPOSED_COLOUR,
    ExportImage,
    case_ids,
    coco_document,
    nnunet_dataset_json,
    overlay,
    unique_names,
)
from gtcorrect.types import LabelMap


def test_names_are_unique_and_nnunet_safe() -> None:
    assert unique_names(["a", "A", "b", "a"]) == ["a", "A-2", "b", "a-3"]
    assert case_ids(["img 01", "img_01", "ü", "x.y"]) == ["img-01", "img-01-2", "case", "x-y"]


def test_nnunet_dataset_json_follows_the_documented_fields() -> None:
    meta = nnunet_dataset_json(LabelMap(("bg", "liver", "tumour")), 1, 12, "d")
    assert meta["labels"] == {"background": 0, "liver": 1, "tumour": 2}
    assert (
        meta["channel_names"] == {"0": "grey"} and meta["numTraining"] == 12 and meta["file_ending"] == ".png"
    )
    with pytest.raises(ValueError, match="1 or 3 channels"):
        nnunet_dataset_json(LabelMap(), 4, 1, "d")


def test_coco_document_has_one_rle_per_image_and_class() -> None:
    mask = np.zeros((7, 9), dtype=np.int64)
    mask[1:3, 2:6] = 1
    mask[5, 0] = 2
    mask[0, 0] = 2
    doc = coco_document([ExportImage(1, "a.png", mask)], LabelMap(("background", "a", "b")), {"x": 1})
    assert [c["name"] for c in doc["categories"]] == ["a", "b"] and doc["images"][0]["height"] == 7
    for ann in doc["annotations"]:
        rle = coco_mask.frPyObjects(ann["segmentation"], 7, 9)
        assert np.array_equal(coco_mask.decode(rle), (mask == ann["category_id"]).astype(np.uint8))
        assert ann["area"] == int((mask == ann["category_id"]).sum())
        assert ann["bbox"] == [float(v) for v in coco_mask.toBbox(rle)]


def test_overlay_draws_given_and_proposed_in_their_colours() -> None:
    image = np.full((20, 20), 100, dtype=np.uint8)
    given = np.zeros((20, 20), dtype=np.int64)
    given[5:12, 5:12] = 1
    proposed = np.roll(given, 4, axis=1)
    both = overlay(image, given, proposed)
    assert both.shape == (20, 20, 3) and both.dtype == np.uint8
    assert (both == GIVEN_COLOUR).all(-1).any() and (both == PROPOSED_COLOUR).all(-1).any()
    given_only = overlay(image, given, proposed, "given")
    assert not (given_only == PROPOSED_COLOUR).all(-1).any()
    only_proposed = overlay(image, given, proposed, "proposed")
    assert not (only_proposed == GIVEN_COLOUR).all(-1).any()
    with pytest.raises(ValueError, match="one size"):
        overlay(image, given[:10], None)
    with pytest.raises(ValueError, match="show"):
        overlay(image, given, None, "neither")
