"""NIfTI volumes trained slice-wise (gtcorrect.volumes): cut into slices and put back with the label file's
affine and header, refusals that name the file, one verdict per volume, and ``gtcorrect train`` on two
folders of ``.nii.gz`` volumes end to end."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from gtcorrect import volumes
from gtcorrect.cli import main
from tests.gtcorrect.synthetic import plumbing_config

# 1.2 x 0.8 x 2.5 mm voxels, rotated and shifted: what must survive the round trip.
AFFINE = np.array(
    [[0.0, -0.8, 0.0, 40.0], [1.2, 0.0, 0.0, -12.5], [0.0, 0.0, 2.5, 7.0], [0.0, 0.0, 0.0, 1.0]]
)


def _volume(seed: int, shape: tuple[int, int, int] = (6, 20, 16)) -> tuple[np.ndarray, np.ndarray]:
    """An MR-like float volume with a bright ellipsoid, and its labels (1 front half, 2 back half)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float64)
    c = np.array(shape) / 2 + rng.uniform(-1, 1, 3)
    inside = ((x - c[0]) / 3) ** 2 + ((y - c[1]) / 6) ** 2 + ((z - c[2]) / 5) ** 2 <= 1.0
    image = 300.0 + 80.0 * rng.normal(size=shape) + 900.0 * inside
    labels = np.where(inside, np.where(y < c[1], 1, 2), 0).astype(np.uint8)
    return image.astype(np.float32), labels


def _write(folder: Path, name: str, data: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, AFFINE)
    image.header.set_xyzt_units("mm")
    nib.save(image, folder / f"{name}.nii.gz")


def _folders(tmp_path: Path, n: int = 3) -> tuple[Path, Path]:
    images, labels = tmp_path / "images", tmp_path / "labels"
    for i in range(n):
        image, label = _volume(i)
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
    np.testing.assert_array_equal(back, _volume(1)[1])
    written = volumes.read_volume_bytes(volumes.label_volume_bytes(back, label))
    np.testing.assert_allclose(written.affine, AFFINE)
    assert written.shape == (6, 20, 16) and written.get_data_dtype() == np.uint8
    assert written.header.get_zooms() == pytest.approx((1.2, 0.8, 2.5))
    np.testing.assert_array_equal(np.asarray(written.dataobj), back)


def test_bad_volumes_are_refused_naming_the_file(tmp_path: Path) -> None:
    images, labels = _folders(tmp_path, 1)
    _write(tmp_path / "series", "cine", np.zeros((4, 4, 4, 2), np.float32))
    with pytest.raises(ValueError, match=r"cine.nii.gz: a volume must have 3 dimensions"):
        volumes.read_volume(tmp_path / "series" / "cine.nii.gz")
    with pytest.raises(ValueError, match=r"case_000.nii.gz: volume of 6x20x16 voxels exceeds max_voxels=100"):
        volumes.read_volume(images / "case_000.nii.gz", max_voxels=100)
    with pytest.raises(ValueError, match=r"case_000: label values \[2\] are outside the label map \(0..1\)"):
        volumes.load_volume_folder(images, labels, num_classes=2)
    _write(images, "case_009", _volume(9)[0])
    with pytest.raises(ValueError, match=r"images without labels \['case_009'\]"):
        volumes.load_volume_folder(images, labels, num_classes=3)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(ValueError, match=r"x.nii.gz: not a readable NIfTI volume"):
        volumes.read_volume(tmp_path / "junk" / "x.nii.gz")


def test_one_grey_scale_per_volume_that_an_outlier_does_not_squash() -> None:
    volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    volume[0, 0, 0] = 1e6
    out = volumes.window(volume)
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
        volume = nib.load(path)
        np.testing.assert_allclose(volume.affine, AFFINE)
        assert volume.shape == (6, 20, 16) and volume.get_data_dtype() == np.uint8
        given = _volume(int(name[-3:]))[1]
        data = np.asarray(volume.dataobj)
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
