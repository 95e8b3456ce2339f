"""Kvasir-SEG read in place, resized once and cached under bench/out/ (git-ignored), keyed by size.

Shape legend: N = 1000 images, S the training size. The cache holds the ``gtcorrect.data.prepare``
output (z-scored images as float16 to halve the file, masks as uint8); nothing is copied into the repo.
The split is fixed (``split_indices(1000, (0.7, 0.1, 0.2), seed=0)``: 700/100/200) whatever the
training seed, and ``n_train`` takes the first images of the shuffled training part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.common import OUT_DIR, SHARED_DATA, Split, cached_arrays
from gtcorrect.data import prepare, read_image, read_mask, split_indices
from gtcorrect.types import LabelMap

KVASIR = SHARED_DATA / "kvasir-seg"
SPLIT_SEED = 0
_CHUNK = 50  # originals are up to 1920 px: decode a few at a time to bound memory


def _build_cache(root: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    names = sorted(p.name for p in (root / "images").glob("*.jpg"))
    if not names:
        raise ValueError(f"{root / 'images'}: no .jpg images found (is this the Kvasir-SEG folder?).")
    missing = [n for n in names if not (root / "masks" / n).is_file()]
    if missing:
        raise ValueError(f"{root / 'masks'}: no mask for {missing[:5]} ({len(missing)} in all).")
    images = np.empty((len(names), 3, size, size), dtype=np.float16)
    masks = np.empty((len(names), size, size), dtype=np.uint8)
    for start in range(0, len(names), _CHUNK):
        chunk = names[start : start + _CHUNK]
        imgs = [read_image(root / "images" / n) for n in chunk]
        # JPEG masks: threshold 127 (MANIFEST.md: no pixel lies in (20, 235)).
        msks = [read_mask(root / "masks" / n, num_classes=2, mode="binary", threshold=127) for n in chunk]
        data = prepare(imgs, msks, [Path(n).stem for n in chunk], label_map=LabelMap(), size=size, channels=3)
        images[start : start + len(chunk)] = data.images
        masks[start : start + len(chunk)] = data.masks
    return images, masks, [Path(n).stem for n in names]


def load_arrays(
    size: int, root: Path = KVASIR, cache_dir: Path = OUT_DIR
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images (N, 3, S, S) float32 and masks (N, S, S) int64 at size S, plus ids; cached."""
    return cached_arrays(cache_dir / f"kvasir-{size}.npz", lambda: _build_cache(root, size))


def kvasir_split(size: int, n_train: int, root: Path = KVASIR) -> Split:
    """The fixed 700/100/200 split at size S, training on the first ``n_train`` of the 700."""
    images, masks, ids = load_arrays(size, root)
    train, val, test = split_indices(len(ids), (0.7, 0.1, 0.2), seed=SPLIT_SEED)
    if not 2 <= n_train <= train.size:
        raise ValueError(f"n_train must lie in 2..{train.size}, got {n_train}.")
    return Split.of(f"kvasir-seg-{size}", images, masks, ids, (train[:n_train], val, test))
