"""Seeded synthetic segmentation data: bright ellipses on a noisy background, some masks corrupted.

Shape legend: H, W image height and width; N images. Images are (H, W, 3) uint8, masks (H, W) uint8
with values 0/1. Corruption is strong on purpose (a shift by a third of the image plus a dilation),
so a correct noise detector must rank the corrupted masks as the least clean.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage


@dataclass(frozen=True)
class SyntheticSet:
    names: list[str]  # image file names, "img_00.png", ...
    images: list[np.ndarray]  # (H, W, 3) uint8
    clean: list[np.ndarray]  # (H, W) uint8 in {0, 1}
    given: list[np.ndarray]  # (H, W) uint8 in {0, 1}: clean, except the corrupted ones
    corrupted: frozenset[int]  # indices whose given mask is corrupted


def _ellipse(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    ry, rx = rng.uniform(0.18, 0.28) * h, rng.uniform(0.18, 0.28) * w
    yy, xx = np.mgrid[0:h, 0:w]
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0).astype(np.uint8)


def _image(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = mask.shape
    base = rng.normal(70.0, 18.0, size=(h, w)) + np.where(mask > 0, rng.uniform(90, 130), 0.0)
    tint = rng.uniform(0.85, 1.15, size=3)
    rgb = np.clip(base[:, :, None] * tint[None, None, :], 0, 255)
    return rgb.astype(np.uint8)


def corrupt(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift by about a third of the image in a random direction, then dilate by 2 px."""
    h, w = mask.shape
    dy = int(round(rng.choice([-1, 1]) * h * 0.33))
    dx = int(round(rng.choice([-1, 1]) * w * 0.33))
    shifted = ndimage.shift(mask, (dy, dx), order=0, mode="constant", cval=0)
    return ndimage.binary_dilation(shifted, iterations=2).astype(np.uint8)


def make_set(n: int, n_corrupted: int, *, height: int = 40, width: int = 48, seed: int = 0) -> SyntheticSet:
    """``n`` images of ``height`` x ``width``; ``n_corrupted`` of their masks corrupted (seeded)."""
    rng = np.random.default_rng(seed)
    clean = [_ellipse(height, width, rng) for _ in range(n)]
    images = [_image(m, rng) for m in clean]
    corrupted = frozenset(int(i) for i in rng.choice(n, size=n_corrupted, replace=False))
    given = [corrupt(m, rng) if i in corrupted else m.copy() for i, m in enumerate(clean)]
    names = [f"img_{i:02d}.png" for i in range(n)]
    return SyntheticSet(names, images, clean, given, corrupted)


def png_bytes(array: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) uint8 -> PNG; 0/1 masks are written 0/255 so they are visible."""
    if array.ndim == 2 and array.max(initial=0) <= 1:
        array = array * 255
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()
