"""JSRT chest X-rays with the SCR structures, read in place and cached under bench/out/ by size.

247 grey 512 px images; ``labels/`` holds one label map per image (0 background, 1 right lung, 2 left
lung, 3 heart, 4 right clavicle, 5 left clavicle; the heart is drawn over the lungs and the clavicles
over both where they overlap, ../shared/data/README.md). Split fixed: ``split_indices(247, (0.7, 0.1,
0.2), seed=0)`` = 173/25/49. Shape legend: N images, S the training size; one grey channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.common import OUT_DIR, SHARED_DATA, Split, cached_arrays
from gtcorrect.data import prepare, read_image, read_mask, split_indices
from gtcorrect.types import LabelMap

JSRT = SHARED_DATA / "jsrt-scr"
LABELS = LabelMap(("background", "right lung", "left lung", "heart", "right clavicle", "left clavicle"))


def _build(root: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    names = sorted(p.name for p in (root / "images").glob("*.png"))
    if not names:
        raise ValueError(f"{root / 'images'}: no .png images found (is this the JSRT-SCR folder?).")
    images = [read_image(root / "images" / n) for n in names]
    masks = [read_mask(root / "labels" / n, num_classes=LABELS.num_classes) for n in names]
    data = prepare(images, masks, [Path(n).stem for n in names], label_map=LABELS, size=size, channels=1)
    return data.images.astype(np.float16), data.masks.astype(np.uint8), data.ids


def load_arrays(
    size: int, root: Path = JSRT, cache_dir: Path = OUT_DIR
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images (N, 1, S, S) float32, label maps (N, S, S) int64 and ids; cached."""
    return cached_arrays(cache_dir / f"jsrt-{size}.npz", lambda: _build(root, size))


def jsrt_split(size: int, root: Path = JSRT) -> Split:
    """The fixed 173/25/49 split at size S."""
    images, masks, ids = load_arrays(size, root)
    parts = split_indices(len(ids), (0.7, 0.1, 0.2), seed=0)
    return Split.of(f"jsrt-{size}", images, masks, ids, parts, LABELS)
