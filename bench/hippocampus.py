"""MSD Task04 hippocampus MR volumes, trained slice-wise: read in place with nibabel, cached by size.

195 volumes (``images/*.nii.gz``, about 36 x 50 x 36 voxels of 1 mm) with label volumes (0 background,
1 anterior, 2 posterior). The engine trains 2D networks, so every volume is cut into its slices along
the first axis (the axis with the fewest: about 36 slices of 50 x 36), each slice windowed to 8 bit with
its volume's 0.5-99.5 % intensity percentiles (what a user exporting slices would do), then prepared at
the training size like any image. The split is by volume, so that no volume has slices on both sides:
``split_indices(195, (0.7, 0.1, 0.2), seed=0)``. The test figure that compares with 3D methods is
``test_per_volume``: each test volume's slices pooled into one Dice per label, at the training size.

Published range for this task (3D, nnU-Net and the Decathlon's best entries): Dice about 0.88-0.90 on
both labels. Shape legend: V volumes, N slices, S the training size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import cast

import numpy as np

from bench.common import OUT_DIR, SHARED_DATA, Split, cached_arrays
from gtcorrect.data import prepare, split_indices
from gtcorrect.types import LabelMap

HIPPOCAMPUS = SHARED_DATA / "hippocampus-3d"
LABELS = LabelMap(("background", "anterior", "posterior"))
AXIS = 0


def _window(volume: np.ndarray) -> np.ndarray:
    """A volume's intensities as uint8 between its 0.5 and 99.5 % percentiles."""
    lo, hi = np.percentile(volume, (0.5, 99.5))
    scaled = (volume.astype(np.float64) - lo) / max(float(hi - lo), 1e-6)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _build(root: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    import nibabel as nib

    def read(path: Path) -> np.ndarray:
        return np.asarray(cast(nib.Nifti1Image, nib.load(path)).dataobj)

    paths = sorted((root / "images").glob("*.nii.gz"))
    if not paths:
        raise ValueError(f"{root / 'images'}: no .nii.gz volumes found (is this the hippocampus folder?).")
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    ids: list[str] = []
    for path in paths:
        volume = _window(read(path))
        labels = read(root / "labels" / path.name).astype(np.int64)
        stem = path.name.removesuffix(".nii.gz")
        for k in range(volume.shape[AXIS]):
            images.append(np.take(volume, k, AXIS)[:, :, None])
            masks.append(np.take(labels, k, AXIS))
            ids.append(f"{stem}_s{k:02d}")
    data = prepare(images, masks, ids, label_map=LABELS, size=size, channels=1)
    return data.images.astype(np.float16), data.masks.astype(np.uint8), data.ids


def load_arrays(
    size: int, root: Path = HIPPOCAMPUS, cache_dir: Path = OUT_DIR
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every slice (N, 1, S, S) float32, its labels (N, S, S) int64 and ids ``<volume>_s<k>``; cached."""
    return cached_arrays(cache_dir / f"hippocampus-{size}.npz", lambda: _build(root, size))


def volume_of(ids: list[str]) -> np.ndarray:
    """(N,) the volume index of every slice id, in order of first appearance."""
    names = [i.rsplit("_s", 1)[0] for i in ids]
    order = {v: j for j, v in enumerate(dict.fromkeys(names))}
    return np.array([order[v] for v in names])


def hippocampus_split(size: int, root: Path = HIPPOCAMPUS) -> Split:
    """The split by volume (70/10/20 % of the volumes, seed 0), slices as images; ``test_groups`` says
    which test volume each test slice belongs to."""
    images, masks, ids = load_arrays(size, root)
    volumes = volume_of(ids)
    train_v, val_v, test_v = split_indices(int(volumes.max()) + 1, (0.7, 0.1, 0.2), seed=0)
    parts = tuple(np.flatnonzero(np.isin(volumes, v)) for v in (train_v, val_v, test_v))
    split = Split.of(f"hippocampus-{size}", images, masks, ids, parts, LABELS)  # type: ignore[arg-type]
    return dataclasses.replace(split, test_groups=volumes[parts[2]])
