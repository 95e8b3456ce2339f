"""LIDC-IDRI nodule crops with four radiologists' masks each, read in place and cached under bench/out/.

1819 grey 128 x 128 crops (the middle slice of each nodule, patients 0001-0700); ``mask-0`` ...
``mask-3`` are four readers' outlines (0/255; empty: that reader did not mark the nodule; the reader
behind ``mask-k`` changes from scan to scan). The split is by patient, so that no patient's nodules sit
on both sides: ``split_indices(patients, (0.7, 0.1, 0.2), seed=0)``.

The benchmark trains on ``mask-0`` (nearly always drawn) and judges it against the other three readers
(``reader_agreement``): where at least two of them marked the nodule, the disagreement of ``mask-0`` is
1 - Dice(mask-0, majority of the other three); where none did, the nodule is "singly marked".
Shape legend: N crops, R = 4 readers, S the training size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import OUT_DIR, SHARED_DATA, Split
from gtcorrect.data import prepare, read_image, read_mask, split_indices
from gtcorrect.metrics import foreground_dice
from gtcorrect.types import LabelMap

LIDC = SHARED_DATA / "lidc-crops"
READERS = 4
LABELS = LabelMap(("background", "nodule"))
_PATIENT = re.compile(r"LIDC-IDRI-(\d+)_")


def _build(root: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    names = sorted(p.name for p in (root / "images").glob("*.png"))
    if not names:
        raise ValueError(f"{root / 'images'}: no .png crops found (is this the LIDC crops folder?).")
    images = [read_image(root / "images" / n) for n in names]
    readers = []
    for r in range(READERS):
        masks = [read_mask(root / f"mask-{r}" / n, num_classes=2) for n in names]
        readers.append(prepare(images, masks, names, label_map=LABELS, size=size, channels=1).masks)
    data = prepare(
        images,
        [np.zeros(i.shape[:2], np.int64) for i in images],
        names,
        label_map=LABELS,
        size=size,
        channels=1,
    )
    return (
        data.images.astype(np.float16),
        np.stack(readers, 1).astype(np.uint8),
        [Path(n).stem for n in names],
    )


def load_arrays(
    size: int, root: Path = LIDC, cache_dir: Path = OUT_DIR
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All crops (N, 1, S, S) float32, the readers' masks (N, R, S, S) int64 and ids; cached."""
    cache = cache_dir / f"lidc-{size}.npz"
    if not cache.exists():
        images, masks, ids = _build(root, size)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=images, masks=masks, ids=np.array(ids))
        tmp.replace(cache)
    with np.load(cache) as z:
        return z["images"].astype(np.float32), z["masks"].astype(np.int64), [str(i) for i in z["ids"]]


def patient_split(ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) crop indices, every patient's crops on one side."""
    patients = sorted({_PATIENT.match(i).group(1) for i in ids})  # type: ignore[union-attr]
    parts = split_indices(len(patients), (0.7, 0.1, 0.2), seed=0)
    side = {patients[j]: k for k, part in enumerate(parts) for j in part}
    which = np.array([side[_PATIENT.match(i).group(1)] for i in ids])  # type: ignore[union-attr]
    return tuple(np.flatnonzero(which == k) for k in range(3))  # type: ignore[return-value]


@dataclass
class ReaderAgreement:
    """Per training crop: the disagreement of ``mask-0`` with the majority of the other readers (NaN
    where fewer than two of them marked the nodule) and whether no other reader marked it."""

    disagreement: np.ndarray  # (N,) 1 - Dice(mask-0, majority of readers 1-3)
    singly_marked: np.ndarray  # (N,) bool: readers 1-3 all empty


def reader_agreement(readers: np.ndarray) -> ReaderAgreement:
    """From the readers' masks (N, R, S, S) of the crops trained on ``mask-0``."""
    others = readers[:, 1:] > 0
    marked = others.any((2, 3)).sum(1)
    majority = (others.sum(1) >= 2).astype(np.int64)
    dis = 1.0 - foreground_dice(readers[:, 0], majority)
    return ReaderAgreement(np.where(marked >= 2, dis, np.nan), marked == 0)


def consensus(readers: np.ndarray) -> np.ndarray:
    """The pixel majority of the readers who marked the nodule (N, S, S): the reference the test set is
    judged against (ties count as foreground, so two of four readers suffice)."""
    marked = (readers > 0).any((2, 3))
    votes = (readers > 0).sum(1)
    need = np.maximum(marked.sum(1), 1)[:, None, None] / 2.0
    return ((votes >= need) & (votes > 0)).astype(np.int64)


def lidc_split(size: int, reader: int = 0, root: Path = LIDC) -> tuple[Split, np.ndarray]:
    """The patient split with ``mask-{reader}`` as the training masks and the readers' consensus as the
    validation and test masks; also the training crops' four masks (N, R, S, S)."""
    images, readers, ids = load_arrays(size, root)
    train, val, test = patient_split(ids)
    ref = consensus(readers)
    split = Split(
        f"lidc-{size}",
        images[train],
        readers[train, reader],
        [ids[i] for i in train],
        images[val],
        ref[val],
        images[test],
        ref[test],
        LABELS,
    )
    return split, readers[train]
