"""COCO import: masks drawn exactly as pycocotools (an independent implementation) draws them, and every
problem of a document named by its entry."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from gtcorrect.brush import decode_brush, encode_brush
from gtcorrect.export import rle_to_mask
from gtcorrect.imports import ImportProblems, decode_counts, read_coco, read_cvat, rle_from_polygon
from gtcorrect.label_studio import file_name as label_studio_file_name
from gtcorrect.label_studio import read_label_studio
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


# Label Studio's brush RLE of a 3x5 mask, written by label-studio-converter 0.0.59 (``brush.mask2rle`` of
# the mask * 255: all four channels 255 in the mask), and of the same mask in red (R, G, B, alpha =
# 255, 0, 0, 255: ``brush.encode_rle`` of the RGBA image, which writes single values as list chunks).
BRUSH_MASK = np.array([[0, 1, 1, 0, 0], [1, 1, 1, 1, 0], [0, 0, 1, 0, 0]], bool)
BRUSH_WHITE = [0, 0, 0, 60, 57, 27, 252, 96, 19, 255, 206, 1, 127, 254, 216, 4, 127, 243, 128, 0]
BRUSH_RED = [
    0, 0, 0, 60, 57, 27, 252, 96, 0, 127, 194, 1, 15, 252, 32, 0, 127, 206, 0, 7, 252, 32, 16, 255, 194, 1,
    15, 252, 32, 16, 255, 194, 0, 7, 253, 176, 0, 63, 225, 0, 3, 254, 112, 0,
]  # fmt: skip
# A 300x300 mask whose top 200 rows are set: runs longer than one chunk holds (2**16 values), as above.
BRUSH_LONG = [
    0, 5, 126, 64, 57, 27, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 212, 191, 255, 255, 255,
    240, 15, 169, 126, 0,
]  # fmt: skip
# Derived by hand from the layout (a 1x2 image): header, then a list chunk of 4 values (0, size 0, length
# 4 - 1 in 3 bits, 255 0 0 255), then a repeated chunk of 4 zeros: list chunks longer than one value,
# which the converter's encoder never writes; its decode_rle reads this as [255, 0, 0, 255, 0, 0, 0, 0].
BRUSH_LIST_CHUNK = [0, 0, 0, 8, 57, 27, 248, 127, 224, 0, 31, 241, 128, 0]
# The same by hand, a 1x4 image as one list chunk of 16 values (size 1: length 16 - 1 in 4 bits), alpha
# 255, 0, 1, 0; the converter's decode_rle reads it as 255 0 0 255, 0 0 0 0, 9 9 9 1, 0 0 0 0.
BRUSH_LONG_LIST = [0, 0, 0, 16, 57, 27, 249, 255, 240, 0, 15, 240, 0, 0, 0, 0, 144, 144, 144, 16, 0, 0, 0, 0]


def test_brush_rle_reads_and_writes_what_the_label_studio_converter_does() -> None:
    np.testing.assert_array_equal(decode_brush(BRUSH_WHITE, 3, 5), BRUSH_MASK)
    np.testing.assert_array_equal(decode_brush(BRUSH_RED, 3, 5), BRUSH_MASK)
    assert encode_brush(BRUSH_MASK) == BRUSH_WHITE
    long = np.zeros((300, 300), bool)
    long[:200] = True
    np.testing.assert_array_equal(decode_brush(BRUSH_LONG, 300, 300), long)
    assert encode_brush(long) == BRUSH_LONG
    np.testing.assert_array_equal(decode_brush(BRUSH_LIST_CHUNK, 1, 2), [[True, False]])
    np.testing.assert_array_equal(decode_brush(BRUSH_LONG_LIST, 1, 4), [[True, False, True, False]])


def test_brush_rle_round_trip_on_random_masks() -> None:
    rng = np.random.default_rng(11)
    for trial in range(60):
        h, w = int(rng.integers(1, 80)), int(rng.integers(1, 80))
        if trial % 3 == 0:  # long runs: a disc
            yy, xx = np.mgrid[:h, :w]
            mask = (yy - h / 2) ** 2 + (xx - w / 3) ** 2 < rng.uniform(0, h * w)
        else:
            mask = rng.random((h, w)) < rng.uniform(0, 1)
        np.testing.assert_array_equal(decode_brush(encode_brush(mask), h, w), mask, err_msg=f"trial {trial}")


@pytest.mark.parametrize(
    ("rle", "reason"),
    [
        (BRUSH_WHITE[:5], "header"),
        (BRUSH_WHITE[:12], "ends inside a chunk"),
        ([*BRUSH_WHITE[:3], 61, *BRUSH_WHITE[4:]], "holds 61 values; a 5x3 RGBA image holds 60"),
        ([300, *BRUSH_WHITE[1:]], "byte values"),
        (BRUSH_LIST_CHUNK, "holds 8 values"),
    ],
)
def test_a_brush_rle_that_is_not_the_image_says_why(rle: list[int], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_brush(rle, 3, 5)


POLYP = LabelMap(("background", "polyp", "tool"))


def ls_result(kind: str, value: dict[str, object], h: int = 20, w: int = 40) -> dict[str, object]:
    """One result of an annotation as Label Studio writes it (``from_name``/``to_name`` of its config)."""
    return {
        "id": "r" + kind[:4],
        "type": kind,
        "from_name": "label",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": value,
    }


def ls_task(image: str, *annotations: dict[str, object], task_id: int = 1) -> dict[str, object]:
    return {"id": task_id, "data": {"image": image}, "annotations": list(annotations), "predictions": []}


def ls_annotation(*results: dict[str, object], ann_id: int = 1, **fields: object) -> dict[str, object]:
    return {
        "id": ann_id,
        "completed_by": {"id": 1, "email": "reader@example.org"},
        "was_cancelled": False,
        "updated_at": f"2026-12-06T10:00:0{ann_id}.000000Z",
        "result": list(results),
        **fields,
    }


def test_label_studio_percent_polygons_and_rectangles_drawn_as_pycocotools_draws_them() -> None:
    points = [[10.0, 5.0], [87.5, 12.5], [70.25, 95.0], [5.0, 80.0]]
    polygon = ls_result("polygonlabels", {"points": points, "polygonlabels": ["polyp"]})
    box = {"x": 50.0, "y": 30.0, "width": 27.5, "height": 42.5, "rotation": 0, "rectanglelabels": ["Tool"]}
    brush = np.zeros((20, 40), bool)
    brush[2:6, 3:9] = True
    brushed = {"format": "rle", "rle": encode_brush(brush), "brushlabels": ["tool"]}
    task = ls_task(
        "/data/upload/3/8f1b2c3d-case%2001.png",
        ls_annotation(polygon, ls_result("rectanglelabels", box), ls_result("brushlabels", brushed)),
    )
    (image,) = read_label_studio([task], POLYP, max_pixels=10_000)
    assert (image.file_name, image.height, image.width) == ("case 01.png", 20, 40)
    assert image.annotator == "reader@example.org"
    pixels = [c for x, y in points for c in (x * 40 / 100, y * 20 / 100)]
    expected = np.where(_reference([pixels], 20, 40), 1, 0)
    x0, y0, x1, y1 = 20.0, 6.0, 31.0, 14.5  # the box in pixels, drawn as a polygon as CVAT's box is
    expected[_reference([[x0, y0, x1, y0, x1, y1, x0, y1]], 20, 40)] = 2  # later results on top
    expected[brush] = 2
    np.testing.assert_array_equal(image.draw(), expected)


def test_label_studio_reads_the_newest_annotation_not_cancelled() -> None:
    left = ls_result(
        "rectanglelabels", {"x": 0, "y": 0, "width": 50, "height": 100, "rectanglelabels": ["polyp"]}
    )
    right = ls_result(
        "rectanglelabels", {"x": 50, "y": 0, "width": 50, "height": 100, "rectanglelabels": ["polyp"]}
    )
    task = ls_task(
        "s3://bucket/cases/a.png",
        ls_annotation(left, ann_id=1),
        ls_annotation(right, ann_id=3, was_cancelled=True),
        ls_annotation(right, ann_id=2, completed_by=7),
    )
    empty = ls_task("http://host/images/b.png?token=x", ls_annotation(ann_id=1), task_id=2)
    empty["predictions"] = [{"result": [ls_result("choices", {"choices": ["none"]}, h=8, w=9)]}]
    chosen, nothing = read_label_studio([task, empty], LabelMap(("background", "polyp")), max_pixels=10_000)
    assert chosen.file_name == "a.png" and chosen.annotator == "Label Studio user 7"
    assert chosen.draw()[:, 20:].all() and not chosen.draw()[:, :20].any()
    # An annotation that draws nothing is background, at the size any result of the task gives.
    assert (nothing.file_name, nothing.height, nothing.width, nothing.shapes) == ("b.png", 8, 9, ())


def test_label_studio_shapes_without_a_size_are_drawn_at_the_image_s_own() -> None:
    """As Label Studio's documentation shows its export: string ids, a rectangle without
    original_width/original_height; percent becomes pixels at the size the image turns out to have."""
    box = ls_result(
        "rectanglelabels", {"x": 10, "y": 20, "width": 50, "height": 40, "rectanglelabels": ["polyp"]}
    )
    del box["original_width"], box["original_height"]
    task = ls_task("a.png", ls_annotation(box, ann_id=1) | {"id": "1001"})
    task["annotations"].append(ls_annotation(ann_id=2) | {"id": "999", "updated_at": None})  # older
    (image,) = read_label_studio([task], POLYP, max_pixels=10_000)
    assert (image.height, image.width, len(image.shapes)) == (0, 0, 1)  # the sample's size, when matched
    drawn = replace(image, height=10, width=30).draw()
    np.testing.assert_array_equal(drawn, np.where(_reference([[3, 2, 18, 2, 18, 6, 3, 6]], 10, 30), 1, 0))


def test_label_studio_file_names() -> None:
    assert label_studio_file_name({"image": "/data/upload/12/0a1b2c3d-scan%20one.png"}) == "scan one.png"
    assert label_studio_file_name({"image": "/data/local-files/?d=polyps/images/0a1b2c3d-c.jpg"}) == (
        "0a1b2c3d-c.jpg"  # only uploads carry the prefix
    )
    assert label_studio_file_name({"patient": "p1", "img": "gs://b/x/c.png"}) == "c.png"
    assert label_studio_file_name({"image": "data:image/png;base64,iVBOR"}) is None


def test_label_studio_problems_are_named_by_their_entry() -> None:
    polygon = {"points": [[1, 1], [50, 1], [50, 50]], "polygonlabels": ["tumour"]}
    brush = {"format": "rle", "rle": BRUSH_WHITE, "brushlabels": ["polyp"]}  # a 5x3 image's, not 40x20
    rotated = {"x": 1, "y": 1, "width": 5, "height": 5, "rotation": 30, "rectanglelabels": ["polyp"]}
    doc = [
        ls_task(
            "a.png",
            ls_annotation(
                ls_result("polygonlabels", polygon),
                ls_result("brushlabels", brush),
                ls_result("rectanglelabels", rotated),
                ls_result(
                    "ellipselabels", {"x": 1, "y": 1, "radiusX": 2, "radiusY": 2, "ellipselabels": ["polyp"]}
                ),
                ls_result("choices", {"choices": ["blurry"]}),
            ),
        ),
        ls_task("b.png", ls_annotation(ann_id=1, was_cancelled=True)),
        ls_task(
            "c.png",
            ls_annotation(ls_result("polygonlabels", {"points": [[1, 1]], "polygonlabels": ["polyp"]})),
        ),
        ls_task("huge.png", ls_annotation(ls_result("brushlabels", brush, h=500, w=500))),
        {"id": 9, "data": {"image": "data:image/png;base64,iVBOR"}, "annotations": []},
    ]
    with pytest.raises(ImportProblems) as raised:
        read_label_studio(doc, POLYP, max_pixels=10_000)
    named = {p["file"]: p["reason"] for p in raised.value.problems}
    result = "tasks[0].annotations[0].result"
    assert named[f"{result}[0]"] == "label 'tumour' is not a class of the label map (polyp, tool)"
    assert "holds 60 values; a 40x20 RGBA image holds 3200" in named[f"{result}[1]"]
    assert "rotated rectangle (rotation 30)" in named[f"{result}[2]"]
    assert "ellipselabels region cannot be drawn" in named[f"{result}[3]"]
    assert f"{result}[4]" not in named  # a choice marks no region: skipped (and counted), not refused
    assert "no submitted annotation" in named["tasks[1] (b.png)"]
    assert "at least 3 [x, y] pairs" in named["tasks[2].annotations[0].result[0]"]
    assert "exceed the limit" in named["tasks[3] (huge.png)"]
    assert "no image path" in named["tasks[4].data"]


def test_label_studio_skipped_answers_and_undecodable_brush() -> None:
    bad = {"format": "rle", "rle": BRUSH_WHITE[:12], "brushlabels": ["polyp"]}
    choice = ls_result("choices", {"choices": ["blurry"]})
    (image,) = read_label_studio(
        [ls_task("a.png", ls_annotation(choice, ls_result("brushlabels", bad, h=3, w=5)))], POLYP, 10_000
    )
    assert image.skipped == ("choices",)
    with pytest.raises(ImportProblems) as raised:
        image.draw()
    assert raised.value.problems == [
        {
            "file": "tasks[0].annotations[0].result[1]",
            "reason": "the brush RLE ends inside a chunk (one reaches bit 109, it holds 96)",
        }
    ]
    with pytest.raises(ImportProblems, match="not a Label Studio JSON export"):
        read_label_studio({"tasks": []}, POLYP, 100)
