"""MSD Task04 hippocampus MR volumes, trained slice-wise: read in place, cached by size.

195 volumes (``images/*.nii.gz``, about 36 x 50 x 36 voxels of 1 mm) with label volumes (0 background,
1 anterior, 2 posterior). The engine trains 2D networks, so every volume is cut into its slices along
the first axis (the axis with the fewest: about 36 slices of 50 x 36) by ``gtcorrect.volumes``, as
``gtcorrect train`` does with NIfTI folders (each slice windowed to 8 bit with its volume's 0.5-99.5 %
intensity percentiles), then prepared at the training size like any image. The split is by volume, so
that no volume has slices on both sides: ``split_indices(195, (0.7, 0.1, 0.2), seed=0)``, of whose 136
training volumes the first ``TRAIN_VOLUMES`` are trained on. The test figure that compares with 3D
methods is ``test_per_volume``: each test volume's slices pooled into one Dice per label, at the
training size.

Published range for this task (3D, nnU-Net and the Decathlon's best entries): Dice about 0.88-0.90 on
both labels. Shape legend: V volumes, N slices, S the training size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bench.common import OUT_DIR, SHARED_DATA, Split, cached_arrays
from gtcorrect import volumes
from gtcorrect.data import prepare, split_indices
from gtcorrect.types import LabelMap

HIPPOCAMPUS = SHARED_DATA / "hippocampus-3d"
# Training volumes used of the 136 the split gives (about 36 slices each): 40 keep one 40-epoch run under
# about 20 minutes on this 2-core machine; the test set is every test volume.
TRAIN_VOLUMES = 40
LABELS = LabelMap(("background", "anterior", "posterior"))
AXIS = 0


def _build(root: Path, size: int, context: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    paths = sorted(p for p in (root / "images").glob("*") if volumes.is_volume(p))
    if not paths:
        raise ValueError(f"{root / 'images'}: no .nii.gz volumes found (is this the hippocampus folder?).")
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    ids: list[str] = []
    for path in paths:
        image, labels = volumes.read_volume(path), volumes.read_volume(root / "labels" / path.name)
        images += volumes.image_slices(image, context)
        masks += volumes.label_slices(labels, LABELS.num_classes)
        ids += [volumes.slice_id(image.name, k) for k in range(image.n_slices)]
    data = prepare(images, masks, ids, label_map=LABELS, size=size, channels=1 + 2 * context)
    return data.images.astype(np.float16), data.masks.astype(np.uint8), data.ids


def load_arrays(
    size: int, root: Path = HIPPOCAMPUS, cache_dir: Path = OUT_DIR, context: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every slice (N, 1 + 2 context, S, S) float32 (``context`` neighbours on either side as channels),
    its labels (N, S, S) int64 and ids ``<volume>_s<k>``; cached."""
    name = f"hippocampus-{size}" + (f"-c{context}" if context else "")
    return cached_arrays(cache_dir / f"{name}.npz", lambda: _build(root, size, context))


def volume_of(ids: list[str]) -> np.ndarray:
    """(N,) the volume index of every slice id, in order of first appearance."""
    names = [volumes.parse_slice_id(i)[0] for i in ids]
    order = {v: j for j, v in enumerate(dict.fromkeys(names))}
    return np.array([order[v] for v in names])


def hippocampus_split(
    size: int, root: Path = HIPPOCAMPUS, train_volumes: int = TRAIN_VOLUMES, context: int = 0
) -> Split:
    """The split by volume (70/10/20 % of the volumes, seed 0), slices as images, the first
    ``train_volumes`` training volumes trained on; ``test_groups`` says which test volume each test slice
    belongs to."""
    images, masks, ids = load_arrays(size, root, context=context)
    which = volume_of(ids)
    train_v, val_v, test_v = split_indices(int(which.max()) + 1, (0.7, 0.1, 0.2), seed=0)
    chosen = (train_v[:train_volumes], val_v, test_v)
    parts = tuple(np.flatnonzero(np.isin(which, v)) for v in chosen)
    name = f"hippocampus-{size}" if train_volumes == TRAIN_VOLUMES else f"hippocampus-{size}-{train_volumes}v"
    name += f"-c{context}" if context else ""
    split = Split.of(name, images, masks, ids, parts, LABELS)  # type: ignore[arg-type]
    return dataclasses.replace(split, test_groups=which[parts[2]])
