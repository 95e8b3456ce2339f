"""Masks in the formats other tools read: COCO run-length encoding and nnU-Net v2's ``dataset.json``.

COCO (https://cocodataset.org/#format-data): one annotation per image and foreground class, its
``segmentation`` an uncompressed RLE ``{"size": [H, W], "counts": [...]}``: run lengths of the mask
flattened in column-major (Fortran) order, starting with a run of zeros (0 when the first pixel is set).
nnU-Net v2 (documentation/dataset_format.md): ``imagesTr/{case}_{channel:04d}{ending}``,
``labelsTr/{case}{ending}`` and a ``dataset.json`` with ``channel_names``, ``labels`` (name -> index,
``background`` 0, indices consecutive), ``numTraining`` and ``file_ending``. A 2D RGB PNG is one file,
``_0000``, with channels R, G, B (nnU-Net's natural-image reader).
Shape legend: H, W mask height and width.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import numpy as np
from scipy import ndimage

from gtcorrect.boundary import outline
from gtcorrect.types import LabelMap

_CASE_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def mask_to_rle(mask: np.ndarray, cls: int) -> dict[str, object]:
    """(H, W) class indices -> COCO uncompressed RLE of ``mask == cls``.

    ``{"size": [H, W], "counts": [...]}``: run lengths in column-major (Fortran) order, starting
    with a run of zeros (possibly of length 0), as ``pycocotools`` expects.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}.")
    counts = run_lengths((mask == cls).ravel(order="F"))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def run_lengths(flat: np.ndarray) -> list[int]:
    """Run lengths of a flat boolean array, starting with a run of False (of length 0 when it starts
    True): COCO's uncompressed RLE (column-major) and CVAT's mask rle (row-major) alike."""
    values = flat.astype(np.int8)
    change = np.flatnonzero(np.diff(values)) + 1
    counts = np.diff(np.concatenate([[0], change, [values.size]])).tolist()
    if values.size and values[0] == 1:
        counts = [0, *counts]
    return [int(c) for c in counts]


def rle_to_mask(rle: dict[str, object]) -> np.ndarray:
    """COCO uncompressed RLE -> (H, W) uint8 binary mask (1 where the class is)."""
    size, counts = rle.get("size"), rle.get("counts")
    if not isinstance(size, list | tuple) or len(size) != 2 or not isinstance(counts, list | tuple):
        raise ValueError(f"RLE needs 'size' [H, W] and a list of 'counts', got keys {sorted(rle)}.")
    h, w = int(size[0]), int(size[1])
    runs = np.asarray(counts, dtype=np.int64)
    if runs.size and (runs.min() < 0 or runs.sum() != h * w):
        raise ValueError(f"RLE counts sum to {int(runs.sum())}, expected H*W = {h * w}.")
    values = np.arange(runs.size) % 2
    flat = np.repeat(values, runs).astype(np.uint8)
    return flat.reshape((h, w), order="F")


def bbox(mask: np.ndarray) -> list[float]:
    """COCO box [x, y, width, height] of a (H, W) boolean mask; zeros when empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


@dataclass(frozen=True)
class ExportImage:
    """One image of an export: its id (a positive integer), file name and its (H, W) class-index mask."""

    image_id: int
    file_name: str
    mask: np.ndarray


def coco_document(images: Iterable[ExportImage], label_map: LabelMap, info: dict[str, Any]) -> dict[str, Any]:
    """A COCO instances document: every non-empty (image, foreground class) region as one annotation."""
    image_rows: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image in images:
        h, w = image.mask.shape
        image_rows.append({"id": image.image_id, "file_name": image.file_name, "height": h, "width": w})
        for class_index in range(1, label_map.num_classes):
            region = image.mask == class_index
            area = int(region.sum())
            if area == 0:
                continue
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image.image_id,
                    "category_id": class_index,
                    "segmentation": mask_to_rle(image.mask, class_index),
                    "area": area,
                    "bbox": bbox(region),
                    "iscrowd": 0,
                }
            )
    categories = [
        {"id": i, "name": name, "supercategory": "object"} for i, name in enumerate(label_map.names) if i > 0
    ]
    return {"info": info, "images": image_rows, "annotations": annotations, "categories": categories}


def cvat_document(images: Iterable[tuple[str, np.ndarray]], label_map: LabelMap, task: str) -> bytes:
    """A CVAT for images 1.1 annotation file: per (file name, (H, W) class-index mask), one ``<mask>`` per
    foreground class present, as CVAT writes it (its box: ``left``, ``top``, ``width``, ``height``; ``rle``:
    run lengths over the box row by row, background first), ``source="auto"``. Upload it to a CVAT task
    holding the same images ("Upload annotations", format "CVAT 1.1"): the masks open as editable
    pre-annotations; ``gtcorrect.imports.read_cvat`` reads the task's export back."""
    root = ElementTree.Element("annotations")
    ElementTree.SubElement(root, "version").text = "1.1"
    meta = ElementTree.SubElement(ElementTree.SubElement(root, "meta"), "task")
    ElementTree.SubElement(meta, "name").text = task
    labels = ElementTree.SubElement(meta, "labels")
    for name in label_map.names[1:]:
        label = ElementTree.SubElement(labels, "label")
        ElementTree.SubElement(label, "name").text = name
        ElementTree.SubElement(label, "type").text = "mask"
    for index, (file_name, mask) in enumerate(images):
        h, w = mask.shape
        image = ElementTree.SubElement(
            root, "image", {"id": str(index), "name": file_name, "width": str(w), "height": str(h)}
        )
        for class_index in range(1, label_map.num_classes):
            region = mask == class_index
            if not region.any():
                continue
            x, y, bw, bh = (int(v) for v in bbox(region))
            box = region[y : y + bh, x : x + bw]
            attributes = {
                "label": label_map.names[class_index],
                "source": "auto",
                "occluded": "0",
                "rle": ", ".join(str(c) for c in run_lengths(box.ravel())),
                "left": str(x),
                "top": str(y),
                "width": str(bw),
                "height": str(bh),
                "z_order": "0",
            }
            ElementTree.SubElement(image, "mask", attributes)
    ElementTree.indent(root)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(root, encoding="utf-8")


def unique_names(names: Sequence[str]) -> list[str]:
    """The names made unique without regard to case: a later duplicate gets "-2", "-3", ..."""
    out: list[str] = []
    seen: set[str] = set()
    for name in names:
        candidate, k = name, 1
        while candidate.lower() in seen:
            k += 1
            candidate = f"{name}-{k}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def case_ids(names: Sequence[str]) -> list[str]:
    """nnU-Net case identifiers for file stems: letters, digits and '-' only, unique."""
    return unique_names([_CASE_UNSAFE.sub("-", name).strip("-") or "case" for name in names])


def nnunet_dataset_json(
    label_map: LabelMap, channels: int, n_training: int, description: str
) -> dict[str, Any]:
    """nnU-Net v2's ``dataset.json`` for 2D PNG cases with ``channels`` channels (1 or 3)."""
    if channels not in (1, 3):
        raise ValueError(f"nnU-Net PNG export takes 1 or 3 channels, got {channels}.")
    channel_names = {"0": "R", "1": "G", "2": "B"} if channels == 3 else {"0": "grey"}
    return {
        "channel_names": channel_names,
        # nnU-Net requires the name "background" for label 0, whatever the dataset calls it.
        "labels": {"background": 0, **{name: i for i, name in enumerate(label_map.names) if i > 0}},
        "numTraining": n_training,
        "file_ending": ".png",
        "description": description,
    }


GIVEN_COLOUR = (255, 196, 0)  # amber: the mask as given
PROPOSED_COLOUR = (0, 200, 255)  # cyan: the proposed correction


def overlay(
    image: np.ndarray, given: np.ndarray, proposed: np.ndarray | None = None, show: str = "both"
) -> np.ndarray:
    """(H, W, 3) uint8 picture for review from the image (H, W, C) uint8, C 1 or 3, and (H, W) masks.

    show "both": the given mask tinted and outlined in amber, the proposed correction outlined in cyan;
    "given" or "proposed": that mask alone, tinted and outlined in its colour.
    """
    if show not in ("both", "given", "proposed"):
        raise ValueError(f"show must be 'both', 'given' or 'proposed', got {show!r}.")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[:2] != given.shape or (proposed is not None and proposed.shape != given.shape):
        raise ValueError(
            f"image {image.shape[:2]}, given {given.shape} and proposed "
            f"{None if proposed is None else proposed.shape} must have one size."
        )
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, :3]
    out = rgb.astype(np.float32)
    Layer = tuple[np.ndarray | None, tuple[int, int, int], bool]  # mask, colour, tinted
    layers: dict[str, list[Layer]] = {
        "both": [(given, GIVEN_COLOUR, True), (proposed, PROPOSED_COLOUR, False)],
        "given": [(given, GIVEN_COLOUR, True)],
        "proposed": [(proposed, PROPOSED_COLOUR, True)],
    }
    thickness = max(1, round(max(given.shape) / 256))
    for mask, colour, tint in layers[show]:
        if mask is None:
            continue
        if tint:
            fg = mask > 0
            out[fg] = 0.75 * out[fg] + 0.25 * np.array(colour, dtype=np.float32)
        line = outline(mask)
        if thickness > 1:
            line = ndimage.binary_dilation(line, iterations=thickness - 1)
        out[line] = colour
    return np.clip(out, 0, 255).astype(np.uint8)
