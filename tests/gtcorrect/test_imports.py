"""COCO import: masks drawn exactly as pycocotools (an independent implementation) draws them, and every
problem of a document named by its entry."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from gtcorrect.export import rle_to_mask
from gtcorrect.imports import ImportProblems, decode_counts, read_coco, rle_from_polygon
from gtcorrect.types import LabelMap

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

THREE = LabelMap(("background", "lung", "heart"))


def _reference(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, h, w))).astype(bool)


def test_polygons_are_drawn_pixel_for_pixel_as_pycocotools_draws_them() -> None:
    rng = np.random.default_rng(7)
    for trial in range(300):
        h, w = int(rng.integers(4, 70)), int(rng.integers(4, 70))
        k = int(rng.integers(3, 10))
        if trial % 2:  # a star around the centre, partly outside the image
            angle, radius = np.sort(rng.uniform(0, 2 * np.pi, k)), rng.uniform(1, max(h, w) * 0.7, k)
            xy = np.stack([w / 2 + radius * np.cos(angle), h / 2 + radius * np.sin(angle)], 1).ravel()
        else:  # any polygon, self-intersecting ones included, some on whole pixels
            xy = rng.uniform(-4, max(h, w) + 4, 2 * k)
            xy = np.round(xy) if trial % 4 == 0 else xy
        polygon = [float(v) for v in xy]
        ours = rle_to_mask({"size": [h, w], "counts": rle_from_polygon(polygon, h, w)}).astype(bool)
        np.testing.assert_array_equal(ours, _reference([polygon], h, w), err_msg=f"trial {trial}")


def test_compressed_rle_decodes_to_the_encoded_mask() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        h, w = int(rng.integers(1, 60)), int(rng.integers(1, 60))
        mask = (rng.random((h, w)) < rng.uniform(0, 1)).astype(np.uint8)
        encoded = coco_mask.encode(np.asfortranarray(mask))
        counts = decode_counts(encoded["counts"].decode())
        np.testing.assert_array_equal(rle_to_mask({"size": [h, w], "counts": counts}), mask)


def _doc(
    annotations: list[dict[str, object]], *, images: list[dict[str, object]] | None = None
) -> dict[str, object]:
    return {
        "images": images or [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
        "categories": [{"id": 5, "name": "Lung "}, {"id": 6, "name": "heart"}],
        "annotations": annotations,
    }


def test_classes_by_name_later_annotations_on_top_and_empty_images_are_background() -> None:
    lung = [[2, 2, 20, 2, 20, 15, 2, 15]]
    heart = coco_mask.encode(np.asfortranarray(np.pad(np.ones((4, 4), np.uint8), ((8, 8), (10, 16)))))
    doc = _doc(
        [
            {"image_id": 1, "category_id": 5, "segmentation": lung},
            {
                "image_id": 1,
                "category_id": 6,
                "segmentation": {"size": [20, 30], "counts": heart["counts"].decode()},
            },
        ],
        images=[
            {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
            {"id": 2, "file_name": "empty.png", "height": 5, "width": 6},
        ],
    )
    first, empty = read_coco(doc, THREE, max_pixels=10_000)
    mask = first.draw()
    expected = np.where(_reference(lung, 20, 30), 1, 0)
    expected[8:12, 10:14] = 2  # the heart is drawn over the lung
    np.testing.assert_array_equal(mask, expected)
    assert empty.file_name == "empty.png" and not empty.draw().any() and empty.draw().shape == (5, 6)


def test_one_category_is_the_one_foreground_class_whatever_its_name() -> None:
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 10}],
        "categories": [{"id": 1, "name": "object"}],
        "annotations": [{"image_id": 1, "category_id": 1, "segmentation": [[1, 1, 8, 1, 8, 8]]}],
    }
    (image,) = read_coco(doc, LabelMap(("background", "polyp")), max_pixels=100)
    assert set(np.unique(image.draw())) == {0, 1}


def test_every_problem_of_a_document_is_named_by_its_entry() -> None:
    doc = _doc(
        [
            {"image_id": 99, "category_id": 5, "segmentation": [[0, 0, 1, 0, 1, 1]]},
            {"image_id": 1, "category_id": 77, "segmentation": [[0, 0, 1, 0, 1, 1]]},
        ],
        images=[
            {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
            {"id": 2, "file_name": "huge.png", "height": 5000, "width": 5000},
            {"id": 3, "file_name": "b.png"},
        ],
    )
    doc["categories"] = [*doc["categories"], {"id": 8, "name": "tumour"}]  # type: ignore[misc]
    with pytest.raises(ImportProblems) as raised:
        read_coco(doc, THREE, max_pixels=10_000)
    named = {p["file"]: p["reason"] for p in raised.value.problems}
    assert "is not listed" in named["annotations[0]"]
    assert "has no class" in named["annotations[1]"]
    assert "exceed the limit" in named["huge.png"]
    assert "needs id, file_name, height and width" in named["images[2]"]
    assert "not a class of the label map (lung, heart)" in named["category 'tumour'"]


@pytest.mark.parametrize(
    ("segmentation", "reason"),
    [
        ({"size": [10, 10], "counts": [100]}, "differs from the image's"),
        ([[1, 2, 3]], "at least 3 x, y pairs"),
        ([[0, 0, 5, 0, "x", 5]], "at least 3 x, y pairs"),
        ({"size": [20, 30], "counts": [5, 5]}, "expected H*W"),
        ({"size": [20, 30], "counts": "\x7f"}, "compressed RLE"),
    ],
)
def test_a_segmentation_that_cannot_be_drawn_names_its_annotation(segmentation: object, reason: str) -> None:
    doc = _doc([{"image_id": 1, "category_id": 6, "segmentation": segmentation}])
    (image,) = read_coco(doc, THREE, max_pixels=10_000)
    with pytest.raises(ImportProblems) as raised:
        image.draw()
    (problem,) = raised.value.problems
    assert problem["file"] == "annotations[0]" and reason in problem["reason"]


def test_not_a_coco_document() -> None:
    with pytest.raises(ImportProblems, match="not a COCO document"):
        read_coco({"masks": []}, THREE, max_pixels=100)
