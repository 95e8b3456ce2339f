"""Masks from annotation-tool exports: a COCO JSON document (polygons, compressed and uncompressed RLE),
a CVAT for images 1.1 XML file (polygons, boxes, masks) and Label Studio's JSON export (brush masks,
polygons, rectangles).

COCO (https://cocodataset.org/#format-data), as CVAT, Label Studio, Roboflow and pycocotools write it:
``images`` (``id``, ``file_name``, ``height``, ``width``), ``categories`` (``id``, ``name``) and
``annotations`` (``image_id``, ``category_id``, ``segmentation``). A segmentation is a list of polygons
``[[x1, y1, x2, y2, ...], ...]`` in pixel coordinates (their union), or an RLE ``{"size": [H, W],
"counts": ...}`` whose counts are a list of run lengths or COCO's compressed string. Both are rasterised
as pycocotools does (``rle_from_polygon`` follows its ``rleFrPoly``), so a mask comes out pixel for pixel
as the tool's own COCO reader shows it.

CVAT for images 1.1 (https://docs.cvat.ai/docs/manual/advanced/xml_format/): ``<image name width height>``
elements holding ``<polygon label points="x1,y1;x2,y2;...">``, ``<box label xtl ytl xbr ybr>`` and
``<mask label rle left top width height>`` (run lengths over the mask's box, row by row, starting with
background). Polygons and boxes are drawn as pycocotools draws a polygon, as CVAT's own COCO export does.
Shapes are painted in ``z_order``, then in the file's order. Points, polylines, cuboids, ellipses and
skeletons are refused by name; image-level tags are skipped.

Label Studio's JSON export: ``gtcorrect.label_studio``, on the same building blocks.

Every listed image becomes one index mask (an image without annotations: background only); annotations
are painted in the document's order, a later one over an earlier one where they overlap. Categories and
labels map to the label map by name (case and surrounding space ignored); with one foreground class and
one label, that label is the class whatever its name.
Shape legend: H, W image height and width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from xml.etree import ElementTree

import numpy as np

from gtcorrect.export import rle_to_mask
from gtcorrect.types import LabelMap


class ImportProblems(ValueError):
    """What is wrong with an export, one ``{"file": <where>, "reason": ...}`` per problem."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__(f"{len(problems)} problem(s): {problems[0]['file']}: {problems[0]['reason']}")
        self.problems = problems


def is_coco(doc: Any) -> bool:
    """Whether ``doc`` (parsed JSON) looks like a COCO document (the three lists)."""
    return isinstance(doc, dict) and all(isinstance(doc.get(k), list) for k in ("images", "annotations"))


def decode_counts(counts: str) -> list[int]:
    """COCO's compressed RLE string -> run lengths (pycocotools' ``rleFrString``): each count in 5-bit
    groups, least significant first, as characters from 48; bit 0x20 continues a count, 0x10 of its last
    group is the sign, and from the third count on each is stored as the difference to the one two back."""
    out: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                raise ValueError("compressed RLE ends inside a count.")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"compressed RLE holds the character {counts[p]!r}.")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def rle_from_polygon(xy: Sequence[float], h: int, w: int) -> list[int]:
    """One polygon ``[x1, y1, ...]`` -> uncompressed RLE counts (column-major), as pycocotools'
    ``rleFrPoly``: the outline is traced on a 5x finer grid and a pixel is inside when its centre lies
    between the outline's crossings of its column."""
    scale = 5.0
    k = len(xy) // 2
    xs = [int(scale * xy[2 * j] + 0.5) for j in range(k)] + [0]
    ys = [int(scale * xy[2 * j + 1] + 0.5) for j in range(k)] + [0]
    xs[k], ys[k] = xs[0], ys[0]
    u: list[int] = []
    v: list[int] = []
    for j in range(k):
        x0, x1, y0, y1 = xs[j], xs[j + 1], ys[j], ys[j + 1]
        dx, dy = abs(x1 - x0), abs(y0 - y1)
        flip = (dx >= dy and x0 > x1) or (dx < dy and y0 > y1)
        if flip:
            x0, x1, y0, y1 = x1, x0, y1, y0
        if dx >= dy:
            s = (y1 - y0) / dx if dx else 0.0
            for d in range(dx + 1):
                t = dx - d if flip else d
                u.append(t + x0)
                v.append(int(y0 + s * t + 0.5))
        else:
            s = (x1 - x0) / dy
            for d in range(dy + 1):
                t = dy - d if flip else d
                v.append(t + y0)
                u.append(int(x0 + s * t + 0.5))
    starts: list[int] = []
    for j in range(1, len(u)):
        if u[j] == u[j - 1]:
            continue
        xd = float(u[j] if u[j] < u[j - 1] else u[j] - 1)
        xd = (xd + 0.5) / scale - 0.5
        if math.floor(xd) != xd or xd < 0 or xd > w - 1:
            continue
        yd = float(v[j] if v[j] < v[j - 1] else v[j - 1])
        yd = min(max((yd + 0.5) / scale - 0.5, 0.0), float(h))
        starts.append(int(xd) * h + math.ceil(yd))
    starts.append(h * w)
    starts.sort()
    diffs, previous = [], 0
    for a in starts:
        diffs.append(a - previous)
        previous = a
    runs = [diffs[0]]
    j = 1
    while j < len(diffs):  # a zero-length run merges its neighbours
        if diffs[j] > 0:
            runs.append(diffs[j])
            j += 1
        else:
            j += 1
            if j < len(diffs):
                runs[-1] += diffs[j]
                j += 1
    return runs


@dataclass(frozen=True)
class BoxRle:
    """CVAT's mask: run lengths (background first) over a box of the image, row by row."""

    counts: tuple[int, ...]
    left: int
    top: int
    width: int
    height: int

    def draw(self, h: int, w: int) -> np.ndarray:
        if self.width < 1 or self.height < 1 or self.left < 0 or self.top < 0:
            raise ValueError(
                f"the mask's box {self.width}x{self.height} at ({self.left}, {self.top}) is empty"
            )
        if self.left + self.width > w or self.top + self.height > h:
            raise ValueError(f"the mask's box reaches past the image's {w}x{h} pixels")
        runs = np.asarray(self.counts, dtype=np.int64)
        if runs.size == 0 or runs.min() < 0 or runs.sum() != self.width * self.height:
            raise ValueError(
                f"the mask's rle sums to {int(runs.sum())}, its box holds {self.width * self.height}"
            )
        box = np.repeat(np.arange(runs.size) % 2, runs).astype(bool).reshape(self.height, self.width)
        mask = np.zeros((h, w), dtype=bool)
        mask[self.top : self.top + self.height, self.left : self.left + self.width] = box
        return mask


@runtime_checkable
class Drawable(Protocol):
    """A format's own mask encoding (CVAT's ``BoxRle``, Label Studio's brush), drawn at the image's size."""

    def draw(self, h: int, w: int) -> np.ndarray: ...


def segmentation_mask(segmentation: Any, h: int, w: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons or RLE) or a ``Drawable`` -> (H, W) bool; raises ValueError
    naming the problem."""
    if isinstance(segmentation, Drawable):
        return segmentation.draw(h, w)
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not isinstance(size, list) or [int(s) for s in size] != [h, w]:
            raise ValueError(f"the RLE's size {size} differs from the image's [{h}, {w}]")
        if isinstance(counts, str):
            counts = decode_counts(counts)
        return rle_to_mask({"size": [h, w], "counts": counts}).astype(bool)
    if not isinstance(segmentation, list) or not segmentation:
        raise ValueError("a segmentation must be a list of polygons or an RLE object")
    mask = np.zeros((h, w), dtype=bool)
    for polygon in segmentation:
        if (
            not isinstance(polygon, list)
            or len(polygon) < 6
            or len(polygon) % 2
            or not all(isinstance(c, int | float) and math.isfinite(c) for c in polygon)
        ):
            raise ValueError("a polygon is a list of at least 3 x, y pairs of numbers")
        mask |= rle_to_mask({"size": [h, w], "counts": rle_from_polygon(polygon, h, w)}).astype(bool)
    return mask


@dataclass(frozen=True)
class ImportedImage:
    """One listed image and the shapes drawn on it, in order: (where in the file, segmentation, class).

    ``height`` and ``width`` are 0 where the export does not say (a Label Studio annotation that draws
    nothing): the image's own size. ``annotator``: who drew it, where the export says (Label Studio's
    ``completed_by``); ``skipped``: the types of the answers that mark no region, one per answer."""

    file_name: str
    height: int
    width: int
    shapes: tuple[tuple[str, Any, int], ...]
    annotator: str | None = None
    skipped: tuple[str, ...] = ()

    def draw(self) -> np.ndarray:
        """(H, W) uint8 class indices; raises ``ImportProblems`` naming a shape that cannot be drawn."""
        mask = np.zeros((self.height, self.width), dtype=np.uint8)
        for where, segmentation, cls in self.shapes:
            try:
                mask[segmentation_mask(segmentation, self.height, self.width)] = cls
            except (ValueError, TypeError) as exc:
                raise ImportProblems([{"file": where, "reason": str(exc)}]) from None
        return mask


def label_classes(names: Sequence[str], label_map: LabelMap) -> tuple[dict[str, int], list[dict[str, str]]]:
    """An export's label names -> class indices of ``label_map`` (by name, case and space ignored; one
    label onto the one foreground class whatever its name), and a problem per label that matches none."""
    if label_map.num_classes == 2 and len(set(names)) == 1:
        return {names[0]: 1}, []
    by_name = {name.strip().lower(): i for i, name in enumerate(label_map.names) if i > 0}
    classes, problems = {}, []
    for name in dict.fromkeys(names):
        index = by_name.get(name.strip().lower())
        if index is None:
            known = ", ".join(label_map.names[1:])
            problems.append(
                {"file": f"category {name!r}", "reason": f"not a class of the label map ({known})"}
            )
        else:
            classes[name] = index
    return classes, problems


def _class_of(categories: list[Any], label_map: LabelMap) -> tuple[dict[Any, int], list[dict[str, str]]]:
    valid = [c for c in categories if isinstance(c, dict) and "id" in c and isinstance(c.get("name"), str)]
    problems = [
        {"file": f"categories[{i}]", "reason": "a category needs an id and a name"}
        for i, c in enumerate(categories)
        if not (isinstance(c, dict) and "id" in c and isinstance(c.get("name"), str))
    ]
    by_name, unknown = label_classes([c["name"] for c in valid], label_map)
    return {c["id"]: by_name[c["name"]] for c in valid if c["name"] in by_name}, problems + unknown


def read_coco(doc: Any, label_map: LabelMap, max_pixels: int) -> list[ImportedImage]:
    """The document's images with their shapes, checked but not drawn (``ImportedImage.draw``, one at a
    time).

    Checked: images (file name, size within ``max_pixels``, ids unique), categories against
    ``label_map``, every annotation's image and category; all problems are raised together as
    ``ImportProblems``."""
    if not is_coco(doc):
        reason = "not a COCO document: it needs 'images' and 'annotations' lists"
        raise ImportProblems([{"file": "document", "reason": reason}])
    classes, problems = _class_of(doc.get("categories") or [], label_map)
    images: dict[Any, tuple[str, int, int]] = {}
    for i, image in enumerate(doc["images"]):
        where = f"images[{i}]"
        try:
            name, h, w = str(image["file_name"]), int(image["height"]), int(image["width"])
        except (KeyError, TypeError, ValueError):
            problems.append({"file": where, "reason": "an image needs id, file_name, height and width"})
            continue
        refused = image_problem(name, h, w, max_pixels)
        if refused is not None:
            problems.append({"file": name.strip() or where, "reason": refused})
        elif image.get("id") in images:
            problems.append({"file": name, "reason": f"image id {image.get('id')!r} is listed twice"})
        else:
            images[image.get("id")] = (name, h, w)
    shapes: dict[Any, list[tuple[str, Any, int]]] = {key: [] for key in images}
    for i, ann in enumerate(doc["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            problems.append({"file": where, "reason": f"image_id {_get(ann, 'image_id')!r} is not listed"})
        elif ann.get("category_id") not in classes:
            reason = f"category_id {ann.get('category_id')!r} has no class of the label map"
            problems.append({"file": where, "reason": reason})
        else:
            shapes[ann["image_id"]].append((where, ann.get("segmentation"), classes[ann["category_id"]]))
    if not images and not problems:
        problems.append({"file": "images", "reason": "the document lists no images"})
    if problems:
        raise ImportProblems(problems)
    return [ImportedImage(name, h, w, tuple(shapes[key])) for key, (name, h, w) in images.items()]


def image_problem(name: str, h: int, w: int, max_pixels: int) -> str | None:
    if not name.strip() or h < 1 or w < 1:
        return "an image needs a file name and a positive size"
    if h * w > max_pixels:
        return f"{w}x{h} pixels exceed the limit of {max_pixels}"
    return None


CVAT_OUTLINES = ("polygon", "box", "mask")
CVAT_OTHERS = ("polyline", "points", "cuboid", "ellipse", "skeleton")  # image-level <tag>s are skipped


def read_cvat(data: bytes, label_map: LabelMap, max_pixels: int) -> list[ImportedImage]:
    """A CVAT for images 1.1 XML file's images with their shapes, checked but not drawn (as ``read_coco``).
    A document type declaration is refused before parsing (an export has none; entities could expand
    without bound)."""
    head = data[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in data.lower():
        raise ImportProblems(
            [{"file": "document", "reason": "XML with a DOCTYPE or entities is not accepted"}]
        )
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise ImportProblems([{"file": "document", "reason": f"not readable XML ({exc})"}]) from None
    if root.tag != "annotations":
        reason = f"not a CVAT for images export: the root element is <{root.tag}>, not <annotations>"
        raise ImportProblems([{"file": "document", "reason": reason}])
    elements = root.findall("image")
    labels = [shape.get("label", "") for image in elements for shape in image if shape.tag in CVAT_OUTLINES]
    classes, problems = label_classes(labels, label_map) if labels else ({}, [])
    images, seen = [], set()
    for i, image in enumerate(elements):
        name = image.get("name", "")
        try:
            h, w = int(image.get("height", "")), int(image.get("width", ""))
        except ValueError:
            problems.append(
                {"file": name or f"image[{i}]", "reason": "an image needs integer width and height"}
            )
            continue
        refused = image_problem(name, h, w, max_pixels) or ("listed twice" if name in seen else None)
        if refused is not None:
            problems.append({"file": name or f"image[{i}]", "reason": refused})
            continue
        seen.add(name)
        shapes = []
        for k, shape in enumerate(image):
            where = f"{name}: <{shape.tag}> {k + 1}"
            if shape.tag in CVAT_OTHERS:
                problems.append(
                    {
                        "file": where,
                        "reason": f"a {shape.tag} outlines no region; only polygons, boxes and masks",
                    }
                )
            elif shape.tag in CVAT_OUTLINES and shape.get("label", "") in classes:
                try:
                    segmentation = _cvat_shape(shape)
                    z = int(float(shape.get("z_order") or 0))
                except ValueError as exc:
                    problems.append({"file": where, "reason": str(exc)})
                    continue
                shapes.append((z, k, (where, segmentation, classes[shape.get("label", "")])))
        images.append(
            ImportedImage(name, h, w, tuple(item for _, _, item in sorted(shapes, key=lambda t: t[:2])))
        )
    if not elements and not problems:
        problems.append({"file": "document", "reason": "the file lists no <image>"})
    if problems:
        raise ImportProblems(problems)
    return images


def _cvat_shape(shape: ElementTree.Element) -> Any:
    """One CVAT outline as a segmentation ``segmentation_mask`` draws; ValueError for bad attributes."""
    try:
        if shape.tag == "polygon":
            points = [float(v) for pair in shape.get("points", "").split(";") for v in pair.split(",")]
            return [points]
        if shape.tag == "box":
            x0, y0, x1, y1 = (float(shape.get(k, "")) for k in ("xtl", "ytl", "xbr", "ybr"))
            return [[x0, y0, x1, y0, x1, y1, x0, y1]]
        counts = tuple(int(v) for v in shape.get("rle", "").replace(" ", "").split(","))
        left, top, width, height = (int(float(shape.get(k, ""))) for k in ("left", "top", "width", "height"))
        return BoxRle(counts, left, top, width, height)
    except ValueError:
        attributes = {"polygon": "points", "box": "xtl, ytl, xbr, ybr"}.get(
            shape.tag, "rle, left, top, width, height"
        )
        raise ValueError(f"its {attributes} are not numbers") from None


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None
