"""Segment images of any size with a trained ``ModelBundle``, and encode masks for export.

Shape legend: H, W original height and width; C image channels; K classes (0 = background);
S the bundle's training size; B a batch.

Images are converted to the bundle's channels, resized to S x S, normalised (``gtcorrect.data``),
run through the eval-mode network under ``torch.inference_mode`` and the softmax probabilities are
restored to the original size (bilinear), so masks have smooth boundaries at full resolution.

Memory stays bounded for large images: an image larger than 4 S on its short side is first reduced by
an integer factor on its uint8 pixels (PIL's box filter), and the full-size mask is restored band by
band of rows (``BAND_BYTES`` of probabilities at a time). The (K, H, W) probabilities exist at full
size only when asked for (``Prediction.probabilities``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from gtcorrect.data import prepare_images, read_mask, restore_probabilities
from gtcorrect.model import ModelBundle
from gtcorrect.networks import VIEWS, mixed_precision, use_amp, view_probs
from gtcorrect.types import LabelMap

BAND_BYTES = 16 << 20  # full-size probabilities held at once while restoring a mask


def _axis_weights(out_n: int, in_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear source indices and weights of ``F.interpolate(align_corners=False)`` along one axis."""
    src = np.maximum((np.arange(out_n) + 0.5) * (in_n / out_n) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_n - 1)
    i1 = np.minimum(i0 + 1, in_n - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, w1


def _bands(low: np.ndarray, size: tuple[int, int]) -> Iterator[tuple[int, np.ndarray]]:
    """(start row, (K, rows, W) float32) bands of ``restore_probabilities(low, size)``."""
    k = low.shape[0]
    h, w = size
    x0, x1, wx = _axis_weights(w, low.shape[2])
    cols = low[:, :, x0] * (1.0 - wx) + low[:, :, x1] * wx  # (K, S, W)
    y0, y1, wy = _axis_weights(h, low.shape[1])
    rows = max(1, BAND_BYTES // (4 * k * max(w, 1)))
    for start in range(0, h, rows):
        sl = slice(start, min(start + rows, h))
        a, b = wy[sl][None, :, None], cols[:, y1[sl]]
        yield start, (cols[:, y0[sl]] * (1.0 - a) + b * a).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Prediction:
    """low (K, S, S) float32: the softmax at the network's size; size (H, W): the original size;
    mask (H, W) argmax at the original size, uint8 (int64 above 256 classes: a 7000 x 7000 mask is then
    49 MB, not 392); mean_confidence: mean over pixels of the winning class's probability."""

    low: np.ndarray
    size: tuple[int, int]
    mask: np.ndarray
    mean_confidence: float

    @property
    def probabilities(self) -> np.ndarray:
        """(K, H, W) float32 at the original size (bilinear), computed on each access."""
        return restore_probabilities(self.low, self.size)

    def foreground_probability(self) -> np.ndarray:
        """(H, W) float32: probability of any non-background class, 1 - P(background), band by band."""
        out = np.empty(self.size, dtype=np.float32)
        for start, band in _bands(self.low, self.size):
            out[start : start + band.shape[1]] = 1.0 - band[0]
        return out

    @classmethod
    def from_low(cls, low: np.ndarray, size: tuple[int, int]) -> Prediction:
        mask = np.empty(size, dtype=np.uint8 if low.shape[0] <= 256 else np.int64)
        confidence = 0.0
        if low.shape[0] == 2:
            # Two classes: bilinear weights sum to 1, so the restored background is 1 - foreground; the
            # foreground alone decides (argmax keeps class 0 on a tie, as fg > 0.5 does), at half the work.
            for start, band in _bands(low[1:], size):
                fg = band[0]
                np.greater(fg, 0.5, out=mask[start : start + fg.shape[0]], casting="unsafe")
                confidence += float(np.abs(fg - 0.5).sum(dtype=np.float64)) + 0.5 * fg.size
        else:
            for start, band in _bands(low, size):
                mask[start : start + band.shape[1]] = band.argmax(axis=0)
                confidence += float(band.max(axis=0).sum(dtype=np.float64))
        return cls(low, size, mask, confidence / max(size[0] * size[1], 1))


def reduce_large(img: np.ndarray, size: int) -> np.ndarray:
    """An image more than 4 x ``size`` on its short side, reduced by an integer factor (box filter on
    uint8, PIL) to at least 2 x ``size``: resizing it to S x S then costs S-scale memory, not H x W
    float32. Smaller images come back unchanged."""
    factor = min(img.shape[0], img.shape[1]) // (2 * size)
    if factor < 2:
        return img
    pil = Image.fromarray(img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img)
    out = np.asarray(pil.reduce(factor))
    return out[:, :, None] if out.ndim == 2 and img.ndim == 3 else out


class Predictor:
    """Holds one eval-mode network built from a ``ModelBundle``; reuse it for many requests."""

    def __init__(self, bundle: ModelBundle, device: str | torch.device = "cpu") -> None:
        if bundle.normalisation != "zscore":
            raise ValueError(f"unsupported normalisation {bundle.normalisation!r} in the model file.")
        if bundle.in_channels not in (1, 3):
            raise ValueError(f"model expects {bundle.in_channels} input channels; only 1 or 3 are supported.")
        self.bundle = bundle
        self.device = torch.device(device)
        self.network = bundle.build(self.device)
        if use_amp("auto", self.device):  # bfloat16 on a CUDA device that has it; float32 elsewhere
            mixed_precision(self.network, self.device)

    @property
    def label_map(self) -> LabelMap:
        return self.bundle.label_map

    def predict(
        self, images: Sequence[np.ndarray], batch_size: int = 8, flips: bool = False
    ) -> list[Prediction]:
        """N images (H, W, C) or (H, W) uint8 of any size -> N predictions at their own sizes (``flips``:
        averaged over each image and its flips, ``forward``)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            probs = self.forward(
                np.stack([self.prepare(img, start + i) for i, img in enumerate(chunk)]), flips=flips
            )
            for img, p in zip(chunk, probs, strict=True):
                out.append(Prediction.from_low(p, (int(img.shape[0]), int(img.shape[1]))))
        return out

    def prepare(self, image: np.ndarray, index: int = 0) -> np.ndarray:
        """One image (H, W, C) or (H, W) uint8 -> the network's input (C, S, S) float32 (``index`` names
        it in the error for a bad shape)."""
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            shape = image.shape
            raise ValueError(f"image {index} must be (H, W), (H, W, 1) or (H, W, 3), got shape {shape}.")
        size = self.bundle.image_size
        return prepare_images([reduce_large(image, size)], size=size, channels=self.bundle.in_channels)[0]

    def forward(self, batch: np.ndarray, flips: bool = False) -> np.ndarray:
        """Prepared inputs (B, C, S, S) -> softmax probabilities (B, K, S, S) float32, network size.
        ``flips``: test-time augmentation, the mean of the probabilities of each input and of its
        horizontal, vertical and double flips (each flipped back), the flips the network was trained with:
        four forward passes, a steadier and usually closer outline (BENCHMARKS.md)."""
        x = torch.from_numpy(batch).to(self.device)
        with torch.inference_mode():
            return view_probs(self.network, x, len(VIEWS) if flips else 1).cpu().numpy()


def predict(
    bundle: ModelBundle,
    images: Sequence[np.ndarray],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    flips: bool = False,
) -> list[Prediction]:
    """One-shot ``Predictor(bundle, device).predict(images, batch_size, flips)``."""
    return Predictor(bundle, device).predict(images, batch_size=batch_size, flips=flips)


def png_to_mask(data: bytes, label_map: LabelMap) -> np.ndarray:
    """Inverse of ``mask_to_png``: PNG bytes -> (H, W) int64 class indices."""
    return read_mask(data, num_classes=label_map.num_classes, mode="index", name="<png mask>")
