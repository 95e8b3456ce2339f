"""Reading images and masks, and bringing them to the training size.

Shape legend: H, W original height and width; C image channels (1 grey or 3 RGB); K classes
(0 = background); S the square training size; N images.

Resize/pad policy. Training arrays are a plain resize of every image to S x S: bilinear for images,
nearest neighbour for masks. The aspect ratio is *not* kept and nothing is padded, as is common for
polyp and cell benchmarks (Kvasir-SEG, BU-BIL), because padding wastes most of the network's field of
view on wide frames. Outputs go back to the original size with ``restore_probabilities`` (bilinear per
class) and ``restore_mask`` (one-hot, bilinear, argmax), so restored boundaries are smooth rather than
blocky.

DICOM (``gtcorrect.dicom`` says which files are taken): the Modality LUT (Rescale Slope and Intercept)
is applied, then the first VOI window when the file gives one, else a min-max stretch to 8 bit;
MONOCHROME1 is inverted so that dense is bright, as in MONOCHROME2; RGB stays RGB.

Normalisation "zscore" (``normalise``): images are scaled to [0, 1], then every image and channel is
shifted to zero mean and unit variance. Its name is stored in the model file.

torch is imported by the resizing functions when first called: reading and writing masks (uploads,
``simulate-noise``) does not load it. pydicom is imported by the first DICOM file read.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile
from numpy.typing import DTypeLike
from PIL import Image

from gtcorrect import dicom
from gtcorrect.formats import FORMAT_NAMES, IMAGE_SUFFIXES
from gtcorrect.types import LabelMap, TrainingData

MaskMode = Literal["index", "binary"]
MAX_PIXELS = 100_000_000
_EPS = 1e-6


def _label(src: str | Path | bytes, name: str | None) -> str:
    if name is not None:
        return name
    return "<bytes>" if isinstance(src, bytes) else str(src)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Integer data that fits stays as is (index masks in 16-bit files); wider data is stretched."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    lo, hi = arr.min(initial=0), arr.max(initial=0)
    if np.issubdtype(arr.dtype, np.integer) and lo >= 0 and hi <= 255:
        return arr.astype(np.uint8)
    # 16-bit or float microscopy: stretch the data range to 8 bit, a band of rows at a time (a 50 MP
    # float32 image would need 1.2 GB of float64 temporaries at once).
    lo, hi = float(arr.min()), float(arr.max())
    out = np.zeros(arr.shape, dtype=np.uint8)
    if hi <= lo:
        return out
    for rows in _bands(arr, 1 << 22):
        out[rows] = np.round((arr[rows].astype(np.float64) - lo) / (hi - lo) * 255.0)
    return out


def _bands(arr: np.ndarray, values: int) -> list[slice]:
    """Slices of whole rows of ``arr`` holding about ``values`` values each (at least one row)."""
    rows = max(1, values // max(1, arr[:1].size))
    return [slice(start, start + rows) for start in range(0, arr.shape[0], rows)]


class _NotIndices(ValueError):
    """Float data where a mask's class indices belong; raised as is, not as an unreadable file."""


def _as_values(arr: np.ndarray, label: str) -> np.ndarray:
    """Integer data as stored (class indices of a 16-bit mask are never stretched)."""
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if not np.issubdtype(arr.dtype, np.integer):
        raise _NotIndices(f"{label}: a mask must hold integer class indices, got {arr.dtype} data.")
    return arr


class _TooLarge(ValueError):
    """Raised before decoding pixels; kept apart from decoder errors, which get a generic message."""


def _check_pixels(label: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise _TooLarge(f"{label}: image of {width}x{height} pixels exceeds max_pixels={max_pixels}.")


def _read_tiff(data: bytes, label: str, max_pixels: int, keep_values: bool) -> np.ndarray:
    # tifffile's objects refer to each other (a cycle only the garbage collector frees, whenever it next
    # runs): closing the buffer ourselves lets the file's bytes go at once.
    with io.BytesIO(data) as buffer, tifffile.TiffFile(buffer) as tif:
        page = tif.pages[0]
        _check_pixels(label, int(page.shape[1]), int(page.shape[0]), max_pixels)
        arr = page.asarray()
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) TIFF
    return _as_values(arr, label) if keep_values else _to_uint8(arr)


def _read_pil(data: bytes, label: str, max_pixels: int, keep_values: bool) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        _check_pixels(label, im.width, im.height, max_pixels)
        if im.mode in ("P", "PA"):
            return np.array(im.convert("RGBA"))
        if im.mode in ("1", "L", "LA", "RGB", "RGBA"):
            # No converted copy when the mode is already right: a 7000 x 7000 RGB image is 147 MB in PIL.
            return np.array(im if im.mode != "1" else im.convert("L"))
        if im.mode.startswith("I") or im.mode == "F":
            return _as_values(np.array(im), label) if keep_values else _to_uint8(np.array(im))
        return np.array(im.convert("RGB"))


_DICOM_MASK = "DICOM masks (DICOM SEG) are not supported; send PNG or TIFF index masks"


def _read_dicom(data: bytes, label: str, max_pixels: int, keep_values: bool) -> np.ndarray:
    """A single-frame DICOM image as (H, W) or (H, W, 3) uint8 (see the module docstring)."""
    if keep_values:
        raise dicom.DicomRefused(f"{label}: {_DICOM_MASK}.")
    from pydicom import dcmread

    with io.BytesIO(data) as buffer:
        header = dicom.read_header(buffer, label)  # refuses volumes and compressed syntaxes
        _check_pixels(label, header.columns, header.rows, max_pixels)
        buffer.seek(0)
        ds = dcmread(buffer)
    stored = ds.pixel_array
    if header.samples == 3:
        return _to_uint8(stored)
    out = _dicom_grey(stored, ds)
    if header.photometric == "MONOCHROME1":  # low values are bright: turn it the MONOCHROME2 way round
        np.subtract(255, out, out=out)
    return out


def _dicom_grey(stored: np.ndarray, ds: Any) -> np.ndarray:
    """(H, W) stored values -> (H, W) uint8: the Modality LUT, then the first VOI window mapped from its
    output range to 0..255, or without a window a min-max stretch (``_to_uint8``)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return _to_uint8(apply_modality_lut(stored, ds))
    # pydicom maps below the window to the lowest output value and above it to the highest; those two
    # are the range that becomes 0..255.
    lo, hi = (float(v) for v in apply_voi_lut(np.array([-np.inf, np.inf]), ds, prefer_lut=False))
    out = np.zeros(stored.shape, dtype=np.uint8)
    if hi == lo:
        return out
    for rows in _bands(stored, 1 << 20):  # float64 values and pydicom's temporaries, a band at a time
        windowed = apply_voi_lut(apply_modality_lut(stored[rows], ds), ds, prefer_lut=False)
        out[rows] = np.clip(np.round((windowed - lo) * (255.0 / (hi - lo))), 0, 255)
    return out


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>")


def _reason(exc: Exception) -> str:
    """A decoder's complaint without the memory address of our own buffer (PIL names its file object)."""
    text = _OBJECT_REPR.sub("the file", str(exc)).strip()
    if isinstance(exc, Image.UnidentifiedImageError) or "cannot identify image file" in text:
        return f"not a {FORMAT_NAMES} file the decoder recognises ({len(IMAGE_SUFFIXES)} kinds accepted)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_image(
    src: str | Path | bytes,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    keep_values: bool = False,
) -> np.ndarray:
    """Decode a PNG, JPEG, TIFF, BMP or single-frame DICOM into (H, W, C) uint8 with C in {1, 3}.

    Grey stays 1 channel, RGBA drops alpha, palette images are converted; 16-bit and float data are
    stretched to 8 bit (DICOM: windowed, see the module docstring), unless ``keep_values`` (index
    masks): then integer values come back as stored (uint8, or the file's wider integer type) and float
    data or a DICOM file is an error. Raises ``ValueError`` naming the file and the reason when the
    input is unreadable, unsupported or larger than ``max_pixels`` (checked from the header, before
    decoding).
    """
    label = _label(src, name)
    data = _load(src, label)
    try:
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            arr = _read_tiff(data, label, max_pixels, keep_values)
        elif dicom.is_dicom(data):
            arr = _read_dicom(data, label, max_pixels, keep_values)
        else:
            arr = _read_pil(data, label, max_pixels, keep_values)
    except (_TooLarge, _NotIndices, dicom.DicomRefused):
        raise
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{label}: image exceeds the decompression bomb limit ({exc}).") from exc
    except Exception as exc:  # PIL and tifffile raise many types for corrupt files
        raise ValueError(f"{label}: not a readable image ({_reason(exc)}).") from exc
    fresh = arr.flags.owndata and arr.flags.writeable  # the decoder's own array, not a view on PIL memory
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"{label}: unsupported image layout {arr.shape}.")
    if arr.shape[2] == 2:  # grey + alpha
        arr = arr[:, :, :1]
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{label}: image has zero size {arr.shape[:2]}.")
    # A writable array of its own (never a view on PIL memory), copied only when it is not one already.
    dtype = arr.dtype if keep_values else np.uint8
    if fresh and arr.dtype == dtype and arr.flags.c_contiguous:
        return arr
    return np.array(arr, dtype=dtype, order="C")


def _load(src: str | Path | bytes, label: str) -> bytes:
    if isinstance(src, bytes):
        data = src
    else:
        try:
            data = Path(src).read_bytes()
        except OSError as exc:
            raise ValueError(f"{label}: cannot read file ({exc.strerror or exc}).") from exc
    if not data:
        raise ValueError(f"{label}: file is empty.")
    return data


def read_mask(
    src: str | Path | bytes,
    *,
    num_classes: int,
    mode: MaskMode = "index",
    threshold: int = 127,
    invert: bool = False,
    name: str | None = None,
    dtype: DTypeLike = np.int64,
) -> np.ndarray:
    """Decode a mask into (H, W) class indices of ``dtype`` (int64 by default; np.uint8 holds any label
    map an 8-bit PNG can store, at an eighth of the memory).

    binary: grey > threshold -> 1 (Kvasir-SEG JPEG masks); with ``invert`` grey <= threshold -> 1
    (BU-BIL, where the cell is black). index: values must lie in 0..num_classes-1; a 0/255 PNG is
    accepted when num_classes == 2 (255 -> 1) because annotation tools export that. A DICOM file is
    refused (DICOM SEG is not read).
    """
    label = _label(src, name)
    if mode not in ("index", "binary"):
        raise ValueError(f"mask mode must be 'index' or 'binary', got {mode!r}.")
    data = _load(src, label)
    if dicom.is_dicom(data):
        raise ValueError(f"{label}: {_DICOM_MASK}.")
    # Index masks keep their stored values (16-bit included); binary masks are thresholded on 8 bit.
    img = read_image(data, name=label, keep_values=mode == "index")
    grey = img[:, :, 0] if img.shape[2] == 1 else to_channels(img, 1)[:, :, 0]
    if (
        img.shape[2] == 3
        and mode == "index"
        and not (np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 0], img[:, :, 2]))
    ):
        raise ValueError(f"{label}: an index mask must be single-channel, got a colour image.")
    if mode == "binary":
        fg = grey <= threshold if invert else grey > threshold
        return fg.astype(dtype)
    present = np.unique(grey)  # in the stored type: a 16-bit mask sorts 2 bytes a pixel, not 8
    values: np.ndarray = grey
    if num_classes == 2 and set(present.tolist()) <= {0, 255}:
        values = grey == 255
    else:
        bad = present[present >= num_classes]
        if bad.size:
            raise ValueError(
                f"{label}: mask values {bad.tolist()[:10]} lie outside the label map 0..{num_classes - 1}."
            )
    if invert:
        if num_classes != 2:
            raise ValueError(f"{label}: invert only applies to binary masks, got num_classes={num_classes}.")
        values = values == 0
    return values.astype(dtype)


def mask_to_png(
    mask: np.ndarray, label_map: LabelMap, compress_level: int = 6, *, visible: bool = True
) -> bytes:
    """(H, W) class indices -> 8-bit grey PNG. ``visible``: binary label maps write 0/255 so that the
    mask can be looked at (answers and downloads meant for people); False: the class indices themselves,
    as label files for other tools (nnU-Net checks that labels are exactly the label map's indices) and
    every annotation the service stores. ``compress_level`` is zlib's (1 fastest, 9 smallest)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}.")
    k = label_map.num_classes
    if k > 256:
        raise ValueError(f"an 8-bit PNG holds at most 256 classes, the label map has {k}.")
    if mask.size and (mask.min() < 0 or mask.max() >= k):
        raise ValueError(f"mask values {int(mask.min())}..{int(mask.max())} lie outside 0..{k - 1}.")
    pixels = mask.astype(np.uint8) * (255 if k == 2 and visible else 1)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) -> (H, W, channels): grey is replicated, RGB becomes ITU-R 601 luminance."""
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"image must be (H, W, 1) or (H, W, 3), got shape {img.shape}.")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}.")
    c = img.shape[2]
    if c == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=2)
    lum = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.clip(np.round(lum), 0, 255).astype(img.dtype)[:, :, None]


def _resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) uint8 -> (C, S, S) float32 in [0, 1], bilinear."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32)).div_(255.0)[None]
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[0].clamp_(0.0, 1.0).numpy()


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) int -> (S, S) int64, nearest neighbour."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    out = F.interpolate(t, size=(size, size), mode="nearest-exact")
    return out[0, 0].numpy().astype(np.int64)


def normalise(x: np.ndarray) -> np.ndarray:
    """(C, S, S) float in [0, 1] -> (C, S, S) float32, zero mean and unit variance per channel."""
    if x.ndim != 3:
        raise ValueError(f"normalise expects (C, S, S), got shape {x.shape}.")
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    return ((x - mean) / np.maximum(std, _EPS)).astype(np.float32)


def restore_probabilities(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, S, S) float -> (K, H, W) float32, bilinear; classes still sum to 1 per pixel."""
    if prob.ndim != 3:
        raise ValueError(f"probabilities must be (K, S, S), got shape {prob.shape}.")
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(prob, dtype=np.float32))[None]
    out = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0]
    return out.numpy()


def restore_mask(mask: np.ndarray, size: tuple[int, int], num_classes: int | None = None) -> np.ndarray:
    """(S, S) int -> (H, W) int64 via one-hot, bilinear, argmax (smooth, not blocky boundaries)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be (S, S), got shape {mask.shape}.")
    k = int(mask.max(initial=0)) + 1 if num_classes is None else num_classes
    k = max(k, 2)
    onehot = np.eye(k, dtype=np.float32)[mask.astype(np.int64)].transpose(2, 0, 1)
    return restore_probabilities(onehot, size).argmax(axis=0).astype(np.int64)


def prepare_images(images: Sequence[np.ndarray], *, size: int, channels: int) -> np.ndarray:
    """N images (H, W, C) uint8 -> (N, channels, S, S) float32, resized and normalised."""
    if not images:
        raise ValueError("no images given.")
    out = np.empty((len(images), channels, size, size), dtype=np.float32)
    for i, img in enumerate(images):
        if img.ndim == 2:
            img = img[:, :, None]
        out[i] = normalise(_resize_image(to_channels(img, channels), size))
    return out


def prepare(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    ids: Sequence[str],
    *,
    label_map: LabelMap,
    size: int,
    channels: int | None = None,
) -> TrainingData:
    """Images (H, W, C) and masks (H, W) -> ``TrainingData`` at S x S with ``original_sizes`` filled.

    channels None: 3 if any image is RGB, else 1.
    """
    if not (len(images) == len(masks) == len(ids)):
        raise ValueError(f"got {len(images)} images, {len(masks)} masks and {len(ids)} ids.")
    if not images:
        raise ValueError("training data is empty: got 0 images.")
    for img, mask, sid in zip(images, masks, ids, strict=True):
        if img.shape[:2] != mask.shape[:2]:
            raise ValueError(
                f"{sid}: image size {img.shape[1]}x{img.shape[0]} differs from mask size "
                f"{mask.shape[1]}x{mask.shape[0]} (width x height)."
            )
    if channels is None:
        channels = 3 if any(img.ndim == 3 and img.shape[2] == 3 for img in images) else 1
    x = prepare_images(images, size=size, channels=channels)
    y = np.stack([resize_mask(m, size) for m in masks])
    return TrainingData(
        images=x,
        masks=y,
        ids=list(ids),
        label_map=label_map,
        original_sizes=[(int(img.shape[0]), int(img.shape[1])) for img in images],
    )


def _index_dir(folder: Path, prefix: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a directory.")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        stem = p.stem.lower()
        if prefix:
            if not stem.startswith(prefix.lower()):
                continue
            stem = stem[len(prefix) :]
        if stem in found:
            raise ValueError(f"{folder}: two files share the stem {stem!r}: {found[stem].name}, {p.name}.")
        found[stem] = p
    return found


def load_folder(
    images_dir: str | Path,
    masks_dir: str | Path,
    *,
    num_classes: int = 2,
    mask_mode: MaskMode = "index",
    invert: bool = False,
    threshold: int = 127,
    mask_prefix: str = "",
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Pair image and mask files by stem (case-insensitive, optional mask prefix) and read them.

    Returns images (H, W, C) uint8, masks (H, W) int64 and ids (the image file stems), sorted by id.
    Unpaired files raise ``ValueError`` listing them.
    """
    imgs = _index_dir(Path(images_dir), "")
    msks = _index_dir(Path(masks_dir), mask_prefix)
    only_img = sorted(imgs[k].name for k in set(imgs) - set(msks))
    only_msk = sorted(msks[k].name for k in set(msks) - set(imgs))
    if only_img or only_msk:
        raise ValueError(
            f"unpaired files: images without a mask {only_img}; masks without an image {only_msk}."
        )
    if not imgs:
        raise ValueError(f"{images_dir}: no image files ({', '.join(IMAGE_SUFFIXES)}).")
    images, masks, ids = [], [], []
    for key in sorted(imgs):
        images.append(read_image(imgs[key]))
        masks.append(
            read_mask(msks[key], num_classes=num_classes, mode=mask_mode, threshold=threshold, invert=invert)
        )
        ids.append(imgs[key].stem)
    return images, masks, ids


def split_indices(
    n: int, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle 0..n-1 with ``seed`` and cut into train/val/test index arrays (sizes rounded, sum n)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}.")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = min(int(round(fractions[1] * n)), n - n_train)
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
