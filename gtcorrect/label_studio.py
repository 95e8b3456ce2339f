"""Label Studio, both ways: its JSON export read as masks, and review tasks written for it to open.

The export (https://labelstud.io/guide/export#Label-Studio-JSON-format-of-annotated-tasks) is a list of
tasks ``{"id", "data": {"image": <path or URL>}, "annotations": [{"id", "completed_by", "was_cancelled",
"updated_at", "result": [...]}], "predictions": [...]}``. Of each task the newest annotation that was not
cancelled (skipped) is read; a task without one is a problem, not a background mask (an annotation that
draws nothing is background). Its results, painted in their order, a later one over an earlier one:
``brushlabels`` (``value.rle``, ``gtcorrect.brush``), ``polygonlabels`` (``value.points``, [x, y] in percent
of ``original_width`` and ``original_height``) and ``rectanglelabels`` (``value.x``, ``y``, ``width``,
``height`` in percent, ``rotation`` 0), polygons and rectangles drawn as pycocotools draws a polygon, as
the Label Studio converter's COCO export hands them to it. Percent becomes pixels at the image's size:
``original_width`` and ``original_height`` where the results give them, else the image's own. Other
regions (ellipses, keypoints) are refused by name; answers that mark no region (choices, text, ratings,
relations) are skipped and counted. Predictions are not read: they are a model's, not an annotator's.
Shape legend: H, W image height and width.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from gtcorrect.brush import decode_brush, encode_brush, header_values
from gtcorrect.imports import ImportedImage, ImportProblems, image_problem, label_classes, segmentation_mask
from gtcorrect.types import LabelMap

DRAWN = ("brushlabels", "polygonlabels", "rectanglelabels")
# Results of these types, or with a position in their value, outline something that is not drawn here.
REGIONS = ("ellipse", "keypoint", "rectangle", "polygon", "brush", "bitmask")
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # what Label Studio puts before an uploaded file's name
FROM_NAME, TO_NAME = "label", "image"  # the labeling config's <BrushLabels name> and <Image name>


@dataclass(frozen=True)
class BrushRle:
    """A ``brushlabels`` result's mask: the run-length encoded RGBA image (``gtcorrect.brush``)."""

    rle: tuple[int, ...]

    def draw(self, h: int, w: int) -> np.ndarray:
        return decode_brush(self.rle, h, w)


@dataclass(frozen=True)
class PercentPolygon:
    """A polygon ``(x1, y1, x2, y2, ...)`` in percent of the image's width and height (Label Studio's
    points and rectangles), drawn at the image's size as pycocotools draws a polygon."""

    xy: tuple[float, ...]

    def draw(self, h: int, w: int) -> np.ndarray:
        return segmentation_mask([[v * (h if k % 2 else w) / 100 for k, v in enumerate(self.xy)]], h, w)


def is_label_studio(doc: Any) -> bool:
    """Whether ``doc`` (parsed JSON) looks like Label Studio's JSON export: a list of tasks with data."""
    return isinstance(doc, list) and all(isinstance(t, dict) and isinstance(t.get("data"), dict) for t in doc)


def read_label_studio(doc: Any, label_map: LabelMap, max_pixels: int) -> list[ImportedImage]:
    """The export's tasks as images with their shapes, checked but not drawn (as ``read_coco``): one per
    task, named by ``file_name``, with its annotator and the answers it skipped. All problems are raised
    together as ``ImportProblems``, each naming its entry (``tasks[3].annotations[0].result[2]``)."""
    if not is_label_studio(doc):
        reason = "not a Label Studio JSON export: a list of tasks, each with a 'data' object"
        raise ImportProblems([{"file": "document", "reason": reason}])
    problems: list[dict[str, str]] = []
    chosen = []
    for t, task in enumerate(doc):
        found = _task(task, f"tasks[{t}]")
        if isinstance(found, dict):
            problems.append(found)
        else:
            chosen.append((t, *found))
    labels = [label for *_, annotation in chosen for label in _labels(annotation)]
    classes, _ = label_classes(labels, label_map) if labels else ({}, [])
    images, seen = [], set()
    for t, name, a, annotation in chosen:
        where = f"tasks[{t}].annotations[{a}]"
        image, found_problems = _image(name, where, annotation, classes, label_map)
        image = image if image.height else _sized(image, doc[t])
        refused = "listed twice" if name in seen else None
        if image.height or image.width:
            refused = image_problem(name, image.height, image.width, max_pixels) or refused
        if refused is not None:
            found_problems.append({"file": f"tasks[{t}] ({name})", "reason": refused})
        problems += found_problems
        seen.add(name)
        images.append(image)
    if not doc:
        problems.append({"file": "document", "reason": "the export lists no tasks"})
    if problems:
        raise ImportProblems(problems)
    return images


def file_name(data: dict[str, Any]) -> str | None:
    """The image's file name from a task's ``data``: of its ``image`` (else of the first value that is a
    path or URL), the last part of the path (of the ``d`` query of a local-files URL), URL-decoded, without
    the 8 hex digits and dash Label Studio puts before an uploaded file's name
    (``/data/upload/3/8f1b2c3d-case01.png`` -> ``case01.png``)."""
    image = data.get("image")
    for value in [image] if isinstance(image, str) else list(data.values()):
        if not isinstance(value, str) or value.startswith("data:"):
            continue
        parts = urlsplit(value)
        name = PurePosixPath((parse_qs(parts.query).get("d") or [unquote(parts.path)])[0]).name
        if value is image or "/" in value or PurePosixPath(name).suffix:
            return (_UPLOAD_PREFIX.sub("", name) if "/data/upload/" in parts.path else name) or None
    return None


def _task(task: dict[str, Any], where: str) -> tuple[str, int, dict[str, Any]] | dict[str, str]:
    """(file name, index and content of the newest annotation not cancelled) or the task's problem."""
    name = file_name(task["data"])
    if name is None:
        return {"file": f"{where}.data", "reason": "no image path or URL (an embedded data: URI has no name)"}
    annotations = task.get("annotations")
    usable = [
        (i, a)
        for i, a in enumerate(annotations if isinstance(annotations, list) else [])
        if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    if not usable:
        reason = "no submitted annotation (none, or all cancelled); predictions are not imported"
        return {"file": f"{where} ({name})", "reason": reason}
    # The newest: the latest updated_at (Label Studio writes them all in UTC, one format), then highest id.
    a, annotation = max(usable, key=lambda ia: (str(ia[1].get("updated_at") or ""), _id(ia[1]), ia[0]))
    return name, a, annotation


def _results(annotation: dict[str, Any]) -> list[Any]:
    results = annotation.get("result")
    return results if isinstance(results, list) else []


def _labels(annotation: dict[str, Any]) -> list[str]:
    """The label names of the drawable results (the first of each; more than one is a problem later)."""
    names = []
    for result in _results(annotation):
        kind = _get(result, "type")
        labels = _get(_get(result, "value"), kind) if kind in DRAWN else None
        if isinstance(labels, list) and labels and isinstance(labels[0], str):
            names.append(labels[0])
    return names


def _image(
    name: str, where: str, annotation: dict[str, Any], classes: dict[str, int], label_map: LabelMap
) -> tuple[ImportedImage, list[dict[str, str]]]:
    """The annotation's results as the shapes of one image, and the problems of its results."""
    problems, shapes, skipped, sizes = [], [], [], set()
    if not isinstance(annotation.get("result"), list):
        problems.append({"file": where, "reason": "its 'result' is not a list"})
    for r, result in enumerate(_results(annotation)):
        at, kind, value = f"{where}.result[{r}]", str(_get(result, "type")), _get(result, "value")
        if kind not in DRAWN:
            positioned = isinstance(value, dict) and any(k in value for k in ("x", "points", "rle"))
            if kind.endswith("labels") or kind in REGIONS or positioned:
                reason = (
                    f"a {kind} region cannot be drawn here; only brushlabels, polygonlabels, rectanglelabels"
                )
                problems.append({"file": at, "reason": reason})
            else:
                skipped.append(kind)
            continue
        try:
            size = _size(result)
            label = _label(kind, value)
            if label not in classes:
                raise ValueError(
                    f"label {label!r} is not a class of the label map ({', '.join(label_map.names[1:])})"
                )
            shapes.append((at, _shape(kind, value, size), classes[label]))
            sizes |= {size} if size else set()
        except ValueError as exc:
            problems.append({"file": at, "reason": str(exc)})
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h}" for h, w in sorted(sizes))
        problems.append({"file": where, "reason": f"its results give the image different sizes ({listed})"})
    h, w = min(sizes) if sizes else (0, 0)
    return ImportedImage(name, h, w, tuple(shapes), _annotator(annotation), tuple(skipped)), problems


def _size(result: Any) -> tuple[int, int] | None:
    """The image's (H, W) as a result gives it; None where it gives none (the image's own then)."""
    h, w = _get(result, "original_height"), _get(result, "original_width")
    if h is None and w is None:
        return None
    if not (isinstance(h, int) and isinstance(w, int)) or h < 1 or w < 1:
        raise ValueError(f"original_width and original_height must be positive integers, got {w!r}, {h!r}")
    return h, w


def _label(kind: str, value: Any) -> str:
    labels = _get(value, kind)
    if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
        raise ValueError(f"value.{kind} must name one label (a pixel holds one class), got {labels!r}")
    return labels[0]


def _shape(kind: str, value: dict[str, Any], size: tuple[int, int] | None) -> Any:
    """One drawable result as a segmentation that ``segmentation_mask`` draws."""
    if kind == "brushlabels":
        rle = value.get("rle")
        if value.get("format", "rle") != "rle" or not isinstance(rle, list):
            raise ValueError("a brush result needs value.format 'rle' and value.rle, a list of bytes")
        if size is None:
            raise ValueError("a brush result needs original_width and original_height")
        h, w = size
        if header_values(rle) != 4 * h * w:
            held = header_values(rle)
            raise ValueError(f"the brush RLE holds {held} values; a {w}x{h} RGBA image holds {4 * h * w}")
        return BrushRle(tuple(rle))
    if kind == "polygonlabels":
        points = value.get("points")
        if not isinstance(points, list) or len(points) < 3 or not all(_numbers(p, 2) for p in points):
            raise ValueError("value.points must be at least 3 [x, y] pairs of numbers (percent)")
        return PercentPolygon(tuple(float(c) for point in points for c in point))
    box: list[Any] = [value.get(k) for k in ("x", "y", "width", "height")]
    if not _numbers(box, 4):
        raise ValueError("a rectangle needs value.x, y, width and height (numbers, percent)")
    if value.get("rotation") not in (None, 0):
        raise ValueError(f"a rotated rectangle (rotation {value.get('rotation')}) is not imported")
    x0, y0, bw, bh = (float(v) for v in box)
    return PercentPolygon((x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh))


def _sized(image: ImportedImage, task: dict[str, Any]) -> ImportedImage:
    """An image whose annotation draws nothing, sized by any result of its task that says (0 x 0: none)."""
    for key in ("annotations", "predictions"):
        entries = task.get(key)
        for entry in entries if isinstance(entries, list) else []:
            for result in _results(entry) if isinstance(entry, dict) else []:
                try:
                    size = _size(result)
                except ValueError:
                    continue
                if size is not None:
                    return replace(image, height=size[0], width=size[1])
    return image


def _annotator(annotation: dict[str, Any]) -> str | None:
    by = annotation.get("completed_by")
    if isinstance(by, dict) and isinstance(by.get("email"), str):
        return by["email"]
    return f"Label Studio user {by}" if isinstance(by, int) and not isinstance(by, bool) else None


@dataclass(frozen=True)
class ReviewItem:
    """One flagged mask for review: the image's file name, the (H, W) class-index mask as given and the
    proposed correction (None where it was withheld), and how likely the given mask is wrong."""

    file_name: str
    given: np.ndarray
    proposed: np.ndarray | None
    noise_probability: float


def review_tasks(
    items: Iterable[ReviewItem], label_map: LabelMap, model_version: str
) -> list[dict[str, Any]]:
    """Label Studio tasks to import into a project with the images (labeling config: an ``<Image
    name="image" value="$image">`` and a ``<BrushLabels name="label" toName="image">`` with the label
    map's names), one per item, ``data.image`` its file name.

    Both masks are predictions, not annotations: the proposed correction (``model_version``, ``score`` the
    noise probability), then the given mask (``model_version`` "given mask"). A reviewer opens the task
    pre-labelled with the correction, can switch to the given mask to compare, and submits what is right;
    only what a person submitted comes back in the export (``read_label_studio`` reads annotations). Were
    the given mask an annotation, a task nobody opened would export it as if reviewed."""
    tasks = []
    for item in items:
        data = {"image": item.file_name, "noise_probability": round(item.noise_probability, 6)}
        predictions = []
        if item.proposed is not None:
            result = _brush_results(item.proposed, label_map, "proposed")
            predictions.append(
                {"model_version": model_version, "score": item.noise_probability, "result": result}
            )
        predictions.append(
            {"model_version": "given mask", "result": _brush_results(item.given, label_map, "given")}
        )
        tasks.append({"data": data, "predictions": predictions})
    return tasks


def _brush_results(mask: np.ndarray, label_map: LabelMap, prefix: str) -> list[dict[str, Any]]:
    """One ``brushlabels`` result per foreground class present in the (H, W) class-index mask."""
    h, w = mask.shape
    return [
        {
            "id": f"{prefix}-{c}",
            "type": "brushlabels",
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "original_width": int(w),
            "original_height": int(h),
            "image_rotation": 0,
            "value": {"format": "rle", "rle": encode_brush(mask == c), "brushlabels": [label_map.names[c]]},
        }
        for c in range(1, label_map.num_classes)
        if (mask == c).any()
    ]


def _numbers(values: Any, n: int) -> bool:
    return (
        isinstance(values, list)
        and len(values) == n
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    )


def _id(obj: dict[str, Any]) -> int:
    value = obj.get("id")  # an integer, or its digits ("1001" in Label Studio's own example)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _get(obj: Any, key: Any) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None
