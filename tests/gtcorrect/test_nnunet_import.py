"""Reading an nnU-Net v2 raw dataset folder (MIC-DKFZ/nnUNet documentation/dataset_format.md): the label map
and the cases of a folder laid out as documented, and every problem named by its entry."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gtcorrect.imports import ImportProblems
from gtcorrect.nnunet_import import NnUNetCase, combine_channels, read_dataset

HIPPOCAMPUS = {"background": 0, "Anterior": 1, "Posterior": 2}
ROOT = "Dataset004_Hippocampus"


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def nnunet_folder(
    *,
    n_cases: int = 3,
    channels: int = 1,
    rgb_in_one: bool = False,
    root: str = ROOT,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> tuple[dict[str, bytes], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A 2D dataset as nnU-Net v2 documents it: ``dataset.json``, ``imagesTr/{case}_{XXXX}.png`` (one grey
    file per channel, or one RGB file with ``rgb_in_one``), ``labelsTr/{case}.png`` and one test image in
    ``imagesTs``; cases of different sizes. Returns the entries, each case's image as the import should
    store it ((H, W) grey or (H, W, 3) RGB) and its label (class indices)."""
    rng = np.random.default_rng(seed)
    prefix = f"{root}/" if root else ""
    entries: dict[str, bytes] = {}
    images: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for k in range(n_cases):
        case = f"hippocampus_{k:03d}"
        h, w = 20 + 3 * k, 30 - 2 * k
        if rgb_in_one:
            images[case] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            entries[f"{prefix}imagesTr/{case}_0000.png"] = png(images[case])
        else:
            planes = [rng.integers(0, 256, (h, w), dtype=np.uint8) for _ in range(channels)]
            for c, plane in enumerate(planes):
                entries[f"{prefix}imagesTr/{case}_{c:04d}.png"] = png(plane)
            images[case] = planes[0] if channels == 1 else np.stack(planes, axis=2)
        labels[case] = rng.integers(0, len(HIPPOCAMPUS), (h, w), dtype=np.uint8)
        entries[f"{prefix}labelsTr/{case}.png"] = png(labels[case])
    for c in range(1 if rgb_in_one else channels):
        entries[f"{prefix}imagesTs/hippocampus_900_{c:04d}.png"] = png(np.zeros((8, 8), np.uint8))
    names = ["R", "G", "B"] if rgb_in_one else ["MRI", "T1", "T2", "ADC"][:channels]
    document = {
        "channel_names": {str(i): n for i, n in enumerate(names)},
        "labels": HIPPOCAMPUS,
        "numTraining": n_cases,
        "file_ending": ".png",
        **(meta or {}),
    }
    entries[f"{prefix}dataset.json"] = json.dumps(document).encode()
    return entries, images, labels


def _read(entries: dict[str, bytes]) -> Any:
    return read_dataset(list(entries), entries.__getitem__)


def _problems(entries: dict[str, bytes]) -> dict[str, str]:
    with pytest.raises(ImportProblems) as caught:
        _read(entries)
    return {p["file"]: p["reason"] for p in caught.value.problems}


@pytest.mark.parametrize(
    ("channels", "rgb_in_one", "root"),
    [(1, False, ROOT), (1, False, ""), (3, False, ROOT), (3, True, ROOT)],
    ids=["grey", "grey, no top folder", "three grey channels", "RGB in one file (our export)"],
)
def test_a_documented_folder_gives_the_label_map_and_its_cases(
    channels: int, rgb_in_one: bool, root: str
) -> None:
    entries, _, _ = nnunet_folder(channels=channels, rgb_in_one=rgb_in_one, root=root)
    entries[f"{root}/cases.csv".lstrip("/")] = b"case,sample_id\n"
    got = _read(entries)
    assert got.root == root and got.name == (root or None)
    assert got.label_map.names == ("background", "Anterior", "Posterior")
    assert got.file_ending == ".png" and got.test_images == (1 if rgb_in_one else channels)
    assert got.ignored == (f"{root}/cases.csv".lstrip("/"),)
    prefix = f"{root}/" if root else ""
    files = 1 if rgb_in_one else channels
    assert got.cases[1] == NnUNetCase(
        "hippocampus_001",
        tuple(f"{prefix}imagesTr/hippocampus_001_{c:04d}.png" for c in range(files)),
        f"{prefix}labelsTr/hippocampus_001.png",
    )
    assert [c.case for c in got.cases] == [f"hippocampus_{k:03d}" for k in range(3)]


def test_the_name_in_dataset_json_comes_before_the_folder_name() -> None:
    entries, _, _ = nnunet_folder(meta={"name": "Hippocampus", "description": "MSD task 4"})
    assert _read(entries).name == "Hippocampus"


def test_two_channels_fit_no_sample_and_each_case_is_named() -> None:
    problems = _problems(nnunet_folder(channels=2)[0])
    assert set(problems) == {f"{ROOT}/imagesTr/hippocampus_{k:03d}_0000.png" for k in range(3)}
    assert "case 'hippocampus_000' has 2 channels; only 1 (grey or RGB) or 3" in next(iter(problems.values()))


def _without(name: str) -> Callable[[dict[str, bytes]], None]:
    return lambda entries: entries.pop(f"{ROOT}/{name}") and None


def _renamed(old: str, new: str) -> Callable[[dict[str, bytes]], None]:
    return lambda entries: entries.update({f"{ROOT}/{new}": entries.pop(f"{ROOT}/{old}")})


def _copied(case: str, to: str) -> Callable[[dict[str, bytes]], None]:
    def change(entries: dict[str, bytes]) -> None:
        entries[f"{ROOT}/imagesTr/{to}_0000.png"] = entries[f"{ROOT}/imagesTr/{case}_0000.png"]
        entries[f"{ROOT}/labelsTr/{to}.png"] = entries[f"{ROOT}/labelsTr/{case}.png"]

    return change


@pytest.mark.parametrize(
    ("channels", "change", "named", "reason"),
    [
        (1, _without("labelsTr/hippocampus_001.png"), "imagesTr/hippocampus_001_0000.png",
         f"no label {ROOT}/labelsTr/hippocampus_001.png"),
        (1, _without("imagesTr/hippocampus_002_0000.png"), "labelsTr/hippocampus_002.png",
         f"no image {ROOT}/imagesTr/hippocampus_002_0000.png"),
        (3, _without("imagesTr/hippocampus_000_0001.png"), "imagesTr/hippocampus_000_0000.png",
         f"no channel {ROOT}/imagesTr/hippocampus_000_0001.png (channel_names lists 3)"),
        (1, _renamed("imagesTr/hippocampus_000_0000.png", "imagesTr/hippocampus_000_0003.png"),
         "imagesTr/hippocampus_000_0003.png", "channel 0003 is not in channel_names"),
        (1, _renamed("imagesTr/hippocampus_000_0000.png", "imagesTr/hippocampus_000.png"),
         "imagesTr/hippocampus_000.png", "ends in _XXXX, its 4-digit channel"),
        (1, _copied("hippocampus_001", "Hippocampus_001"), "imagesTr/hippocampus_001_0000.png",
         "cases 'Hippocampus_001' and 'hippocampus_001' differ only in letter case"),
    ],
    ids=["missing label", "missing image", "missing channel", "channel beyond", "no channel", "letter case"],
)  # fmt: skip
def test_a_case_without_its_files_is_named_by_entry(
    channels: int, change: Callable[[dict[str, bytes]], None], named: str, reason: str
) -> None:
    entries = nnunet_folder(channels=channels)[0]
    change(entries)
    problems = _problems(entries)
    assert reason in problems[f"{ROOT}/{named}"], problems


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ({"labels": {"background": 0, "Anterior": 1, "Posterior": 3}}, "labels must be consecutive from 0"),
        ({"labels": {"background": 1, "Anterior": 0}}, "labels must map 'background' to 0, got 1"),
        ({"labels": {"background": 0, "tumour": [1, 2]}}, "region-based labels are not supported"),
        ({"labels": {"background": 0, "Anterior": 1, "ignore": 2}}, "'ignore' label"),
        ({"labels": {"background": 0, "Anterior": 1.5}}, "maps to 1.5, not a class index"),
        ({"file_ending": None}, "file_ending must be a file extension"),
        ({"file_ending": ".jpg"}, "is lossy"),
        (
            {"file_ending": ".mha"},
            "holds 3D volumes; this 3D format is not read (volumes: file_ending .nii.gz",
        ),
        ({"file_ending": ".tiff"}, "this 3D format is not read"),
        ({"channel_names": {"1": "MRI"}}, "channel_names must map '0', '1', ..."),
        ({"numTraining": 4}, "numTraining is 4, but imagesTr and labelsTr hold 3 cases"),
        ({"dataset": {}}, "lists its files under 'dataset'"),
    ],
)
def test_a_bad_dataset_json_is_named_with_the_reason(meta: dict[str, Any], reason: str) -> None:
    problems = _problems(nnunet_folder(meta=meta)[0])
    assert reason in problems[f"{ROOT}/dataset.json"], problems


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"labels": {"background": 0, "a": 1}, "numTraining": 3, "channel_names": {"0": "MRI"}}',
         "misses the required key(s) file_ending"),
        (b'{"modality": {"0": "MRI"}, "labels": {"0": "background"}}', "nnUNetv2_convert_old_nnUNet_dataset"),
    ],
)  # fmt: skip
def test_an_unreadable_dataset_json_is_named(document: bytes, reason: str) -> None:
    entries = nnunet_folder()[0]
    entries[f"{ROOT}/dataset.json"] = document
    assert reason in _problems(entries)[f"{ROOT}/dataset.json"]


def test_an_archive_without_one_dataset_json_is_refused() -> None:
    entries = nnunet_folder()[0]
    meta = entries.pop(f"{ROOT}/dataset.json")
    assert "holds no dataset.json" in _problems(entries)["dataset.json"]
    entries[f"{ROOT}/dataset.json"] = meta
    entries["Dataset005_Prostate/dataset.json"] = meta
    assert "holds 2 datasets" in _problems(entries)["Dataset005_Prostate/dataset.json"]


def test_a_tif_dataset_with_spacing_files_is_a_3d_stack() -> None:
    entries = nnunet_folder(meta={"file_ending": ".tif"})[0]
    entries[f"{ROOT}/imagesTr/cell6.json"] = b'{"spacing": [7.6, 7.6, 80.0]}'
    assert "this 3D format is not read" in _problems(entries)[f"{ROOT}/imagesTr/cell6.json"]


def test_three_grey_channels_become_one_rgb_image_in_channel_order() -> None:
    rng = np.random.default_rng(1)
    planes = [rng.integers(0, 256, (5, 7, 1), dtype=np.uint8) for _ in range(3)]
    rgb = combine_channels(planes, ["a_0000.png", "a_0001.png", "a_0002.png"])
    assert rgb.shape == (5, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], planes[c][:, :, 0])
    one = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert combine_channels([one], ["a_0000.png"]) is one


def test_channels_of_another_size_or_in_colour_are_named() -> None:
    grey, small = np.zeros((5, 7, 1), np.uint8), np.zeros((5, 6, 1), np.uint8)
    with pytest.raises(ImportProblems) as caught:
        combine_channels(
            [grey, small, np.zeros((5, 7, 3), np.uint8)], ["a_0000.png", "a_0001.png", "a_0002.png"]
        )
    assert caught.value.problems == [
        {"file": "a_0001.png", "reason": "6x5 pixels, but a_0000.png is 7x5: a case has one size"},
        {"file": "a_0002.png", "reason": "an RGB image where one grey channel belongs"},
    ]
