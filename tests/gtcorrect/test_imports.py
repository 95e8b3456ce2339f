"""COCO import: masks drawn exactly as pycocotools (an independent implementation) draws them, and every
problem of a document named by its entry."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from gtcorrect.export import rle_to_mask
from gtcorrect.imports import ImportProblems, decode_counts, read_coco, read_cvat, rle_from_polygon
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


def cvat_rle(box: np.ndarray) -> str:
    """A mask's box as CVAT writes it: run lengths row by row, background first."""
    flat = box.astype(np.uint8).ravel()
    runs, value, count = [], 0, 0
    for pixel in flat:
        if pixel == value:
            count += 1
        else:
            runs.append(count)
            value, count = pixel, 1
    runs.append(count)
    return ", ".join(str(r) for r in runs)


def cvat_xml(images: str) -> bytes:
    """A CVAT for images 1.1 export around ``images`` (the <image> elements), as CVAT writes its header."""
    return f"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task><id>7</id><name>chest</name><size>2</size><mode>annotation</mode>
      <labels>
        <label><name>lung</name><color>#fa3253</color><type>any</type><attributes></attributes></label>
        <label><name>heart</name><color>#33ddff</color><type>any</type><attributes></attributes></label>
      </labels>
    </task>
    <dumped>2026-12-06 19:00:00.000000+00:00</dumped>
  </meta>
{images}
</annotations>
""".encode()


def test_cvat_polygons_boxes_and_masks_in_z_order() -> None:
    heart = np.zeros((6, 9), bool)
    heart[1:5, 2:7] = True
    heart[2, 4] = False  # a hole
    xml = cvat_xml(f"""
  <image id="0" name="case1.png" width="30" height="20">
    <mask label="heart" source="manual" occluded="0" rle="{cvat_rle(heart)}"
      left="12" top="8" width="9" height="6" z_order="1">
    </mask>
    <polygon label="Lung" source="manual" occluded="0"
      points="2.50,1.00;24.20,3.00;22.00,17.50;3.00,18.00" z_order="0">
    </polygon>
    <tag label="lung" source="manual"></tag>
  </image>
  <image id="1" name="case2.png" width="10" height="8">
    <box label="heart" source="manual" occluded="0"
      xtl="1.00" ytl="2.00" xbr="6.50" ybr="7.00" z_order="0"></box>
  </image>
  <image id="2" name="case3.png" width="5" height="5"></image>""")
    first, second, third = read_cvat(xml, THREE, max_pixels=10_000)
    lung = [2.5, 1.0, 24.2, 3.0, 22.0, 17.5, 3.0, 18.0]
    expected = np.where(_reference([lung], 20, 30), 1, 0)
    expected[8:14, 12:21][heart] = 2  # z_order 1: drawn over the lung, its hole showing the lung
    np.testing.assert_array_equal(first.draw(), expected)
    box = np.where(_reference([[1.0, 2.0, 6.5, 2.0, 6.5, 7.0, 1.0, 7.0]], 8, 10), 2, 0)
    np.testing.assert_array_equal(second.draw(), box)
    assert third.file_name == "case3.png" and not third.draw().any()


A_PNG = '<image id="0" name="a.png" width="30" height="20">{}</image>'


@pytest.mark.parametrize(
    ("images", "named", "reason"),
    [
        (
            A_PNG.format('<polyline label="lung" points="1,1;5,5"/>'),
            "a.png: <polyline> 1",
            "outlines no region",
        ),
        (
            A_PNG.format('<polygon label="lung" points="1,x;5,5;2,2"/>'),
            "a.png: <polygon> 1",
            "are not numbers",
        ),
        (A_PNG.format('<polygon label="tumour" points="1,1;5,5;2,2"/>'), "category 'tumour'", "not a class"),
        ('<image id="0" name="a.png" width="30"></image>', "a.png", "integer width and height"),
    ],
)
def test_cvat_problems_are_named(images: str, named: str, reason: str) -> None:
    with pytest.raises(ImportProblems) as raised:
        read_cvat(cvat_xml(images), THREE, max_pixels=10_000)
    problems = {p["file"]: p["reason"] for p in raised.value.problems}
    assert reason in problems[named], problems


def test_cvat_mask_outside_its_image_and_unsafe_xml() -> None:
    mask = '<mask label="heart" rle="0, 20" left="5" top="5" width="10" height="2"/>'
    xml = cvat_xml(f'<image id="0" name="a.png" width="10" height="10">{mask}</image>')
    (image,) = read_cvat(xml, THREE, max_pixels=10_000)
    with pytest.raises(ImportProblems, match="reaches past the image"):
        image.draw()
    bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY b "bbbbbbbb">]><annotations>&b;</annotations>'
    with pytest.raises(ImportProblems, match="DOCTYPE"):
        read_cvat(bomb, THREE, max_pixels=100)
    with pytest.raises(ImportProblems, match="root element is <coco>"):
        read_cvat(b"<coco/>", THREE, max_pixels=100)
