"""The 3D network benchmark (``bench.hippocampus3d``) on synthetic volumes: volumes placed in the box and
cropped back voxel for voxel, per-volume Dice, and a 3D U-Net that learns a two-label structure."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bench import hippocampus3d
from gtcorrect.config import NetConfig
from tests.support.volumes import nifti, volume


def test_a_volume_is_placed_in_the_box_and_found_again() -> None:
    image = np.arange(6 * 20 * 16, dtype=np.uint8).reshape(6, 20, 16)
    x, at = hippocampus3d.padded(image, (8, 32, 16))
    assert x.shape == (1, 8, 32, 16)
    inside = x[0][at]
    np.testing.assert_allclose(inside.mean(), 0.0, atol=1e-5)  # z-scored over the volume's own voxels
    assert np.corrcoef(inside.ravel(), image.ravel())[0, 1] > 0.999
    labels = hippocampus3d.padded_labels(np.ones((6, 20, 16), np.uint8), at, (8, 32, 16))
    assert labels.sum() == 6 * 20 * 16 and labels[at].all()
    with pytest.raises(ValueError, match="does not fit"):
        hippocampus3d.padded(image, (4, 32, 16))


def test_volume_dice_per_label() -> None:
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[0, :2] = 1
    pred = truth.copy()
    pred[0, 0] = 0  # half of label 1 missed
    np.testing.assert_allclose(hippocampus3d.volume_dice(pred, truth, 3), [2 * 4 / 12, np.nan])


def test_mirroring_moves_image_and_labels_together() -> None:
    x = torch.arange(2 * 4 * 6 * 8, dtype=torch.float32).reshape(2, 1, 4, 6, 8)
    y = x[:, 0].long()
    mx, my = hippocampus3d.mirrored(x, y, torch.Generator().manual_seed(3))
    assert torch.equal(mx[:, 0].long(), my) and not torch.equal(mx, x)


def test_test_time_mirrorings_are_every_subset_of_the_trained_axes() -> None:
    assert hippocampus3d.mirrorings((0, 1, 2)) == [(), (2,), (3,), (2, 3), (4,), (2, 4), (3, 4), (2, 3, 4)]
    assert hippocampus3d.mirrorings((0, 2)) == [(), (2,), (4,), (2, 4)]


def test_a_3d_network_learns_the_structure(tmp_path: Path) -> None:
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    for i in range(12):
        image, labels = volume(i, (12, 20, 16))
        nib.save(nifti(image), tmp_path / "images" / f"case_{i:03d}.nii.gz")
        nib.save(nifti(labels), tmp_path / "labels" / f"case_{i:03d}.nii.gz")
    record = hippocampus3d.run_3d(
        seed=0,
        train_volumes=8,
        steps=150,
        root=tmp_path,
        net=NetConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1),
        box=(16, 32, 16),
        mirror=(0, 2),  # the labels are the structure's two halves along axis 1: mirrored, they swap
    )
    assert record["train_volumes"] == 8 and record["test_volumes"] >= 2
    assert record["test_per_volume"]["anterior"] > 0.7
    assert record["test_per_volume"]["posterior"] > 0.7
    assert min(record["test_per_volume_mirrored"].values()) > 0.7  # mirrored views put back in place
