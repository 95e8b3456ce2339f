"""nnU-Net v2 raw datasets in: the inverse of ``gtcorrect.export``'s nnU-Net layout.

The layout (MIC-DKFZ/nnUNet ``documentation/dataset_format.md``): ``dataset.json`` with ``channel_names``
({"0": name, ...}), ``labels`` (name -> index, ``background`` 0, consecutive), ``numTraining``,
``file_ending``; ``imagesTr/{case}_{XXXX}{ending}``, one file per channel XXXX; ``labelsTr/{case}{ending}``;
``imagesTs/`` optional (not imported). An RGB PNG may hold its three channels in one ``_0000`` file
(nnU-Net's natural-image reader; our export writes RGB images so).

2D: ``.png``, ``.bmp``, ``.tif`` (nnU-Net's ``NaturalImage2DIO``); one channel file is the case's image
(grey or RGB); three grey ones become one RGB image (R 0000, G 0001, B 0002); other channel counts fit no
sample and are refused per case. 3D: ``.nii.gz`` and ``.nii`` (NIfTI, one channel per case: the image
volume, trained slice-wise; ``gtcorrect.volumes``); the other volume endings (``.nrrd``, ``.mha``,
``.tiff``) are refused by name. Shape legend: H, W image height and width.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from gtcorrect.formats import VOLUME_SUFFIXES
from gtcorrect.imports import ImportProblems
from gtcorrect.types import LabelMap

PLANE_ENDINGS = (".png", ".bmp", ".tif")
NIFTI_ENDINGS = VOLUME_SUFFIXES
VOLUME_ENDINGS = (".nrrd", ".nhdr", ".mha", ".mhd", ".tiff")  # 3D formats not read
NO_3D = "this 3D format is not read (volumes: file_ending .nii.gz or .nii; 2D: .png, .bmp or .tif)"
_REQUIRED = ("channel_names", "labels", "numTraining", "file_ending")
_CHANNEL = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")
Problems = list[dict[str, str]]


@dataclass(frozen=True)
class NnUNetCase:
    case: str
    images: tuple[str, ...]  # archive entries, in channel order
    label: str


@dataclass(frozen=True)
class NnUNetDataset:
    root: str  # the folder of dataset.json in the archive ("" at the top)
    name: str | None  # dataset.json's "name", else the root folder's name
    label_map: LabelMap
    file_ending: str
    channel_names: tuple[str, ...]
    cases: tuple[NnUNetCase, ...]
    test_images: int  # imagesTs files, left out
    ignored: tuple[str, ...]  # entries of no training case (cases.csv, a README, ...)


@dataclass
class _Entries:
    images: dict[str, dict[int, str]] = field(default_factory=dict)  # case -> channel -> entry
    labels: dict[str, str] = field(default_factory=dict)  # case -> entry
    test_images: int = 0
    ignored: list[str] = field(default_factory=list)
    problems: Problems = field(default_factory=list)


def read_dataset(names: Sequence[str], read: Callable[[str], bytes]) -> NnUNetDataset:
    """The archive's entry ``names`` -> its label map and training cases. ``read(name)`` gives an entry's
    bytes (dataset.json's; it may raise ``ImportProblems`` itself). Raises ``ImportProblems`` naming every
    entry at fault."""
    root = _root(names)
    prefix = f"{root}/" if root else ""
    meta_name = f"{prefix}dataset.json"
    doc = _document(read(meta_name), meta_name)
    ending = doc["file_ending"].lower()
    k = len(doc["channel_names"])
    entries = _sort(names, prefix, ending)
    cases = _pair(entries, prefix, ending, k)
    found = len(set(entries.images) | set(entries.labels))
    if not found or found != doc["numTraining"]:
        reason = (
            f"numTraining is {doc['numTraining']}, but imagesTr and labelsTr hold {found} cases ({ending})"
        )
        entries.problems.append({"file": meta_name, "reason": reason})
    if entries.problems:
        raise ImportProblems(entries.problems)
    labels = sorted(doc["labels"].items(), key=lambda item: int(item[1]))
    title = doc.get("name")
    return NnUNetDataset(
        root=root,
        name=title.strip() if isinstance(title, str) and title.strip() else PurePosixPath(root).name or None,
        label_map=LabelMap(tuple(name for name, _ in labels)),
        file_ending=ending,
        channel_names=tuple(str(doc["channel_names"][str(c)]) for c in range(k)),
        cases=tuple(cases),
        test_images=entries.test_images,
        ignored=tuple(n for n in entries.ignored if n != meta_name),
    )


def _root(names: Sequence[str]) -> str:
    """The folder of the archive's one ``dataset.json``."""
    found = sorted(
        n
        for n in names
        if PurePosixPath(n).name == "dataset.json"
        and PurePosixPath(n).parent.name not in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
    )
    if not found:
        reason = (
            "the archive holds no dataset.json (nnU-Net v2's raw layout: dataset.json, imagesTr, labelsTr)"
        )
        raise ImportProblems([{"file": "dataset.json", "reason": reason}])
    if len(found) > 1:
        reason = f"the archive holds {len(found)} datasets ({', '.join(found)}); import one at a time"
        raise ImportProblems([{"file": n, "reason": reason} for n in found])
    return "" if "/" not in found[0] else found[0].rsplit("/", 1)[0]


def _document(data: bytes, name: str) -> dict[str, Any]:
    """dataset.json, parsed and checked (every problem of it at once)."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportProblems([{"file": name, "reason": f"not valid JSON ({exc})"}]) from None
    if not isinstance(doc, dict):
        problems = ["must be a JSON object"]
    elif "modality" in doc and "channel_names" not in doc:
        problems = ["nnU-Net v1's dataset.json ('modality'); convert it: nnUNetv2_convert_old_nnUNet_dataset"]
    elif missing := [k for k in _REQUIRED if k not in doc]:
        problems = [f"misses the required key(s) {', '.join(missing)}"]
    else:
        problems = _ending_problems(doc["file_ending"]) or _labels_problems(doc["labels"])
        problems += _other_problems(doc) if not problems else []
    if problems:
        raise ImportProblems([{"file": name, "reason": p} for p in problems])
    return doc


def _ending_problems(ending: Any) -> list[str]:
    if not isinstance(ending, str) or not ending.startswith("."):
        return [f"file_ending must be a file extension such as '.png', got {ending!r}"]
    if ending.lower() in VOLUME_ENDINGS:
        return [f"file_ending {ending!r} holds 3D volumes; {NO_3D}"]
    if ending.lower() in (".jpg", ".jpeg"):
        return [f"file_ending {ending!r} is lossy, which nnU-Net refuses for label files; use .png"]
    if ending.lower() not in PLANE_ENDINGS + NIFTI_ENDINGS:
        readable = ", ".join(PLANE_ENDINGS + NIFTI_ENDINGS)
        return [f"file_ending {ending!r} is not one this import reads ({readable})"]
    return []


def _labels_problems(labels: Any) -> list[str]:
    if not isinstance(labels, dict) or not labels:
        return ["labels must map class names to indices ({'background': 0, ...})"]
    problems = []
    for label, value in labels.items():
        if label == "ignore":
            problems.append("the 'ignore' label (partly annotated images) is not supported")
        elif isinstance(value, list | tuple):
            problems.append(f"label {label!r} is a region {value}; region-based labels are not supported")
        elif isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
            problems.append(f"label {label!r} maps to {value!r}, not a class index")
        elif not label.strip():
            problems.append("a label name is empty")
    if problems:
        return problems
    indices = sorted(int(v) for v in labels.values())
    if str(labels.get("background")) != "0":
        return [f"labels must map 'background' to 0, got {labels.get('background')!r}"]
    if indices != list(range(len(indices))) or len(indices) < 2:
        return [f"labels must be consecutive from 0 with a class besides background, got {indices}"]
    return []


def _other_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    if "dataset" in doc:
        problems.append("lists its files under 'dataset'; only the imagesTr and labelsTr folders are read")
    channels = doc["channel_names"]
    if not isinstance(channels, dict) or set(channels) != {str(i) for i in range(max(1, len(channels)))}:
        problems.append(f"channel_names must map '0', '1', ... to channel names, got {channels!r}")
    n = doc["numTraining"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        problems.append(f"numTraining must be the number of training cases, got {n!r}")
    return problems


def _sort(names: Sequence[str], prefix: str, ending: str) -> _Entries:
    """Every entry as a channel file, a label file, a test image, a problem, or ignored."""
    out = _Entries()
    for name in names:
        parts = name[len(prefix) :].split("/") if name.startswith(prefix) else []
        folder, base = (parts[0], parts[1]) if len(parts) == 2 else ("", "")
        stem = base[: -len(ending)]
        if ending == ".tif" and folder in ("imagesTr", "labelsTr") and base.endswith(".json"):
            out.problems.append({"file": name, "reason": f"the spacing file of a 3D TIFF stack; {NO_3D}"})
        elif folder == "imagesTs" and base.lower().endswith(ending):
            out.test_images += 1
        elif folder not in ("imagesTr", "labelsTr") or not base.lower().endswith(ending):
            out.ignored.append(name)
        elif folder == "labelsTr":
            out.labels[stem] = name
        elif match := _CHANNEL.fullmatch(stem):
            out.images.setdefault(match["case"], {})[int(match["channel"])] = name
        else:
            reason = (
                f"an image's name ends in _XXXX, its 4-digit channel, before {ending} (case_0000{ending})"
            )
            out.problems.append({"file": name, "reason": reason})
    return out


def _pair(entries: _Entries, prefix: str, ending: str, k: int) -> list[NnUNetCase]:
    """Cases with a label and each of their ``k`` channels; the others become problems on their entries."""
    problems, labels = entries.problems, entries.labels
    cases: list[NnUNetCase] = []
    seen: dict[str, str] = {}
    for case in sorted(set(entries.images) | set(labels)):
        channels = entries.images.get(case, {})
        first = channels[min(channels)] if channels else labels[case]
        found = len(problems)
        if case not in labels:
            problems.append({"file": first, "reason": f"no label {prefix}labelsTr/{case}{ending}"})
        elif not channels:
            problems.append({"file": first, "reason": f"no image {prefix}imagesTr/{case}_0000{ending}"})
        elif k != 1 and ending in NIFTI_ENDINGS:
            reason = f"case {case!r} has {k} channels; a volume case takes one (_0000)"
            problems.append({"file": first, "reason": reason})
        elif k not in (1, 3):
            reason = f"case {case!r} has {k} channels; only 1 (grey or RGB) or 3 (made one RGB image) fit"
            problems.append({"file": first, "reason": reason})
        rgb_in_one = k == 3 and sorted(channels) == [0]  # nnU-Net's natural RGB images: one file
        for c in [] if rgb_in_one or not channels else [c for c in range(k) if c not in channels]:
            reason = f"no channel {prefix}imagesTr/{case}_{c:04d}{ending} (channel_names lists {k})"
            problems.append({"file": first, "reason": reason})
        for c in sorted(c for c in channels if c >= k):
            reason = f"channel {c:04d} is not in channel_names ({k}: 0000 to {k - 1:04d})"
            problems.append({"file": channels[c], "reason": reason})
        if case.lower() in seen:
            reason = f"cases {seen[case.lower()]!r} and {case!r} differ only in letter case (one file name)"
            problems.append({"file": first, "reason": reason})
        seen[case.lower()] = case
        if len(problems) == found:
            cases.append(NnUNetCase(case, tuple(channels[c] for c in sorted(channels)), labels[case]))
    return cases


def combine_channels(planes: Sequence[np.ndarray], names: Sequence[str]) -> np.ndarray:
    """A case's decoded channel files ((H, W, C) each, channel order) -> its image: one file as it is,
    three grey ones as (H, W, 3) RGB. Raises ``ImportProblems`` naming each file that does not fit."""
    if len(planes) == 1:
        return planes[0]
    problems: Problems = []
    h, w = planes[0].shape[:2]
    for plane, name in zip(planes, names, strict=True):
        if plane.shape[2] != 1:
            problems.append({"file": name, "reason": "an RGB image where one grey channel belongs"})
        elif plane.shape[:2] != (h, w):
            reason = (
                f"{plane.shape[1]}x{plane.shape[0]} pixels, but {names[0]} is {w}x{h}: a case has one size"
            )
            problems.append({"file": name, "reason": reason})
    if problems:
        raise ImportProblems(problems)
    return np.concatenate(list(planes), axis=2)
