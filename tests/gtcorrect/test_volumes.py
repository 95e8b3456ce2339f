"""NIfTI volumes trained slice-wise (gtcorrect.volumes): cut into slices and put back with the label file's
affine and header, refusals that name the file, one verdict per volume, and ``gtcorrect train`` on two
folders of ``.nii.gz`` volumes end to end."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from gtcorrect import volumes
from gtcorrect.cli import main
from tests.gtcorrect.synthetic import plumbing_config
from tests.support.volumes import AFFINE, nifti, volume


def _write(folder: Path, name: str, data: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nifti(data), folder / f"{name}.nii.gz")


def _folders(tmp_path: Path, n: int = 3) -> tuple[Path, Path]:
    images, labels = tmp_path / "images", tmp_path / "labels"
    for i in range(n):
        image, label = volume(i)
        _write(images, f"case_{i:03d}", image)
        _write(labels, f"case_{i:03d}", label)
    return images, labels


def test_volumes_are_cut_into_slices_and_written_back_in_the_label_files_space(tmp_path: Path) -> None:
    images, labels = _folders(tmp_path, 2)
    slices, masks, ids, like = volumes.load_volume_folder(images, labels, num_classes=3)
    assert len(slices) == len(masks) == len(ids) == 12  # 6 slices along the first axis, 2 volumes
    assert ids[:2] == ["case_000_s000", "case_000_s001"] and ids[6] == "case_001_s000"
    assert slices[0].shape == (20, 16, 1) and slices[0].dtype == np.uint8
    assert masks[0].shape == (20, 16) and set(np.unique(np.concatenate(masks))) == {0, 1, 2}
    # One grey scale per volume: the ellipsoid is bright in every slice that cuts it.
    assert all(
        s[m > 0].mean() > s[m == 0].mean() + 100 for s, m in zip(slices, masks, strict=True) if m.any()
    )

    label = like["case_001"]
    back = volumes.stack(masks[6:])
    np.testing.assert_array_equal(back, volume(1)[1])
    written = volumes.read_volume_bytes(volumes.label_volume_bytes(back, label))
    np.testing.assert_allclose(written.affine, AFFINE)
    assert written.shape == (6, 20, 16) and written.get_data_dtype() == np.uint8
    assert written.header.get_zooms() == pytest.approx((1.2, 0.8, 2.5))
    np.testing.assert_array_equal(np.asarray(written.dataobj), back)


def test_a_slice_can_carry_its_neighbours_as_channels(tmp_path: Path) -> None:
    images, _ = _folders(tmp_path, 1)
    image = volumes.read_volume(images / "case_000.nii.gz")
    alone, context = volumes.image_slices(image), volumes.image_slices(image, context=1)
    assert len(context) == len(alone) == 6 and context[0].shape == (20, 16, 3)
    assert not np.array_equal(alone[2], alone[3])  # the slices differ: the channels say which is which
    for k in range(6):  # channels k - 1, k, k + 1, the end slices repeated beyond the volume's ends
        for c, j in enumerate((max(k - 1, 0), k, min(k + 1, 5))):
            np.testing.assert_array_equal(context[k][:, :, c], alone[j][:, :, 0])


def test_bad_volumes_are_refused_naming_the_file(tmp_path: Path) -> None:
    images, labels = _folders(tmp_path, 1)
    _write(tmp_path / "series", "cine", np.zeros((4, 4, 4, 2), np.float32))
    with pytest.raises(ValueError, match=r"cine.nii.gz: a volume must have 3 dimensions"):
        volumes.read_volume(tmp_path / "series" / "cine.nii.gz")
    with pytest.raises(ValueError, match=r"case_000.nii.gz: volume of 6x20x16 voxels exceeds max_voxels=100"):
        volumes.read_volume(images / "case_000.nii.gz", max_voxels=100)
    with pytest.raises(ValueError, match=r"case_000: label values \[2\] are outside the label map \(0..1\)"):
        volumes.load_volume_folder(images, labels, num_classes=2)
    _write(images, "case_009", volume(9)[0])
    with pytest.raises(ValueError, match=r"images without labels \['case_009'\]"):
        volumes.load_volume_folder(images, labels, num_classes=3)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(ValueError, match=r"x.nii.gz: not a readable NIfTI volume"):
        volumes.read_volume(tmp_path / "junk" / "x.nii.gz")


def test_one_grey_scale_per_volume_that_an_outlier_does_not_squash() -> None:
    data = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    data[0, 0, 0] = 1e6
    out = volumes.window(data)
    assert out.dtype == np.uint8 and out.max() == 255 and out.min() == 0
    assert 100 < out[5, 0, 0] < 155  # the middle of the range stays mid-grey


def test_a_volume_is_flagged_when_any_of_its_slices_is() -> None:
    ids = ["a_s000", "a_s001", "a_s002", "b_s000", "b_s001"]
    noise = np.array([0.1, 0.7, 0.9, 0.2, 0.3])
    rows = volumes.volume_report(ids, noise, noise > 0.5)
    assert rows == [
        {"volume": "a", "slices": 3, "flagged": True, "noise_probability": 0.9, "flagged_slices": [2, 1]},
        {"volume": "b", "slices": 2, "flagged": False, "noise_probability": 0.3, "flagged_slices": []},
    ]


def test_train_on_nifti_folders_writes_corrected_label_volumes(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    images, labels = _folders(tmp_path, 3)
    config = plumbing_config(image_size=16, t_epochs=1)
    (tmp_path / "config.json").write_text(config.to_json())
    out = tmp_path / "run"
    argv = ["train", "--images", str(images), "--masks", str(labels), "--out", str(out), "--num-classes", "3"]
    assert main([*argv, "--config", str(tmp_path / "config.json")]) == 0

    report = json.loads((out / "noise_report.json").read_text())
    assert [r["file_name"] for r in report][:2] == ["case_000_s000", "case_000_s001"] and len(report) == 18
    verdicts = json.loads((out / "volumes.json").read_text())
    assert sorted(v["volume"] for v in verdicts) == ["case_000", "case_001", "case_002"]
    corrected = {r["file_name"] for r in report if r["correction_proposed"]}
    assert corrected, "the plumbing config proposes corrections"
    for v in verdicts:
        assert v["flagged"] == bool(v["flagged_slices"]) and v["slices"] == 6
    written = sorted(p.name for p in (out / "corrected").iterdir())
    assert written == sorted({f"{volumes.parse_slice_id(sid)[0]}.nii.gz" for sid in corrected})
    for path in (out / "corrected").iterdir():
        name = volumes.volume_name(path)
        loaded = nib.load(path)
        np.testing.assert_allclose(loaded.affine, AFFINE)
        assert loaded.shape == (6, 20, 16) and loaded.get_data_dtype() == np.uint8
        given = volume(int(name[-3:]))[1]
        data = np.asarray(loaded.dataobj)
        for k in range(6):  # slices without a correction are handed back as given
            if f"{name}_s{k:03d}" not in corrected:
                np.testing.assert_array_equal(data[k], given[k])

    # The trained model segments the volumes slice-wise into label volumes in the images' space.
    seg = tmp_path / "seg"
    assert (
        main(["predict", "--model", str(out / "model.pt"), "--images", str(images), "--out", str(seg)]) == 0
    )
    assert sorted(p.name for p in seg.glob("*.nii.gz")) == [f"case_{i:03d}.nii.gz" for i in range(3)]
    answer = nib.load(seg / "case_000.nii.gz")
    np.testing.assert_allclose(answer.affine, AFFINE)
    assert answer.shape == (6, 20, 16) and answer.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(answer.dataobj))) <= {0, 1, 2}
    shares = json.loads((seg / "predictions.json").read_text())[0]["class_fractions"]
    assert len(shares) == 3 and sum(shares) == pytest.approx(1.0)


def test_a_volume_is_read_to_the_bytes_its_header_declares_and_no_further() -> None:
    image, _ = volume(0)
    raw = nifti(image).to_bytes()
    # A gzip bomb behind a small header: 256 MB of zeros after the voxels are never inflated.
    bomb = gzip.compress(raw + bytes(1 << 28), compresslevel=1)
    assert len(bomb) < 2_000_000  # about 1.2 MB
    read = volumes.read_volume_stream(io.BytesIO(bomb), "bomb.nii.gz")
    np.testing.assert_array_equal(read.data, image)
    np.testing.assert_allclose(read.image.affine, AFFINE)
    header = volumes.read_header(io.BytesIO(bomb), "bomb.nii.gz")
    assert header.shape == (6, 20, 16) and header.voxels == 1920 and header.itemsize == 4
    uncompressed = volumes.read_volume_stream(io.BytesIO(raw), "plain.nii")  # .nii as well as .nii.gz
    np.testing.assert_array_equal(uncompressed.data, image)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda raw: raw[:-100], r"a.nii.gz: truncated: \d+ of the \d+ bytes its header declares"),
        (lambda raw: raw[:40], r"a.nii.gz: not a readable NIfTI volume"),
        (lambda raw: raw[:344] + b"ni1\x00" + raw[348:], r"a.nii.gz: a .hdr/.img pair"),
    ],
)
def test_broken_volume_files_are_refused_naming_them(mangle: Any, message: str) -> None:
    raw = mangle(nifti(volume(0)[0]).to_bytes())
    with pytest.raises(ValueError, match=message):
        volumes.read_volume_stream(io.BytesIO(gzip.compress(raw)), "a.nii.gz")


def test_a_volume_of_nan_is_refused() -> None:
    image = volume(0)[0]
    image[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"a.nii.gz: the volume holds NaN or infinite values"):
        volumes.read_volume_stream(io.BytesIO(gzip.compress(nifti(image).to_bytes())), "a.nii.gz")
