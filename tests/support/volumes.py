"""Synthetic NIfTI volumes for tests: an MR-like volume with a two-label structure, and its file bytes."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np

# 1.2 x 0.8 x 2.5 mm voxels, rotated and shifted: what must survive every round trip.
AFFINE = np.array(
    [[0.0, -0.8, 0.0, 40.0], [1.2, 0.0, 0.0, -12.5], [0.0, 0.0, 2.5, 7.0], [0.0, 0.0, 0.0, 1.0]]
)


def volume(seed: int, shape: tuple[int, int, int] = (6, 20, 16)) -> tuple[np.ndarray, np.ndarray]:
    """An MR-like float volume with a bright ellipsoid, and its labels (1 front half, 2 back half)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float64)
    c = np.array(shape) / 2 + rng.uniform(-1, 1, 3)
    inside = ((x - c[0]) / 3) ** 2 + ((y - c[1]) / 6) ** 2 + ((z - c[2]) / 5) ** 2 <= 1.0
    image = 300.0 + 80.0 * rng.normal(size=shape) + 900.0 * inside
    labels = np.where(inside, np.where(y < c[1], 1, 2), 0).astype(np.uint8)
    return image.astype(np.float32), labels


def nifti(data: np.ndarray, affine: np.ndarray = AFFINE) -> nib.Nifti1Image:
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    return image


def nifti_bytes(data: np.ndarray, *, gz: bool = True, affine: np.ndarray = AFFINE) -> bytes:
    """A ``.nii.gz`` (or with ``gz=False`` a ``.nii``) file of ``data``."""
    raw = nifti(data, affine).to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw
