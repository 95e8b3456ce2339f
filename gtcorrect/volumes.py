"""3D volumes in NIfTI (``.nii.gz``, ``.nii``), trained slice-wise: cut into 2D slices, and put back.

The engine's networks are 2D. A volume becomes the slices along one axis (``SLICE_AXIS``, the first: the
axis with the fewest slices in the MSD hippocampus volumes), each windowed to 8 bit with its volume's
0.5-99.5 % intensity percentiles so that every slice of one volume shares one grey scale; its label
volume gives the slices' masks. A slice is named ``<volume>_s<k>`` (k zero-padded to three digits).
After training, ``stack`` puts masks back in their volume and ``label_volume_bytes`` writes them as NIfTI
with the label file's own affine and header (orientation, spacing and size as they were), voxels as
uint8 class indices. nibabel is imported on first use.

Shape legend: X, Y, Z a volume's voxels; the slices along axis 0 are (Y, Z).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from gtcorrect.formats import VOLUME_SUFFIXES, is_volume_name, volume_stem

SLICE_AXIS = 0
MAX_VOXELS = 100_000_000
NIFTI2_HEADER_BYTES = 540  # the larger of the two headers
_SLICE = "_s"


def is_volume(path: str | Path) -> bool:
    return is_volume_name(str(path))


def volume_name(path: str | Path) -> str:
    """The file name without its NIfTI ending: ``case_001.nii.gz`` -> ``case_001``."""
    return volume_stem(Path(path).name)


def slice_id(name: str, k: int) -> str:
    return f"{name}{_SLICE}{k:03d}"


def parse_slice_id(sid: str) -> tuple[str, int]:
    """``case_001_s012`` -> (``case_001``, 12)."""
    name, _, k = sid.rpartition(_SLICE)
    return name, int(k)


@dataclass(frozen=True)
class Volume:
    """A NIfTI volume as read: its voxels (X, Y, Z) as stored, and the image object for its header."""

    name: str
    data: np.ndarray
    image: Any  # nibabel's Nifti1Image or Nifti2Image: affine, header

    @property
    def n_slices(self) -> int:
        return int(self.data.shape[SLICE_AXIS])


def read_volume(path: str | Path, max_voxels: int = MAX_VOXELS) -> Volume:
    """A 3D NIfTI file (a 4D one with one time point too); ``ValueError`` naming the file otherwise, and
    before any voxel is read when the header declares more than ``max_voxels``."""
    with open(path, "rb") as f:
        return read_volume_stream(f, Path(path).name, max_voxels)


# What reading and windowing a volume holds per voxel at most, beside its file: the voxels as read (float64
# where the header scales them), the percentiles' sorted copy of them, and the uint8 slices (the float
# grey scale is one slice at a time). The attack replay measures it (docs/RELIABILITY.md).
HELD_BYTES_PER_VOXEL = 8 + 8 + 1


@dataclass(frozen=True)
class VolumeHeader:
    """What a NIfTI header declares, read before any voxel."""

    nifti: Any  # nibabel's Nifti1Header or Nifti2Header
    shape: tuple[int, int, int]
    nbytes: int  # the file (uncompressed) up to its last voxel: header, extensions, voxels

    @property
    def voxels(self) -> int:
        return int(np.prod(self.shape))

    @property
    def itemsize(self) -> int:
        return int(self.nifti.get_data_dtype().itemsize)


def read_header(stream: IO[bytes], file_name: str, max_voxels: int = MAX_VOXELS) -> VolumeHeader:
    """The header of a single-file NIfTI-1 or -2 volume (``.nii`` or ``.nii.gz``, a seekable stream):
    ``ValueError`` naming ``file_name`` unless it declares a 3D volume (or 4D with one time point) of at
    most ``max_voxels`` voxels."""
    try:
        return _parse_header(_uncompressed(stream).read(NIFTI2_HEADER_BYTES), file_name, max_voxels)
    except (OSError, EOFError) as exc:  # a broken gzip stream
        raise ValueError(f"{file_name}: not a readable NIfTI volume ({exc}).") from exc


def read_volume_stream(stream: IO[bytes], file_name: str, max_voxels: int = MAX_VOXELS) -> Volume:
    """A volume from a seekable stream: its header first (``read_header``), then exactly the bytes it
    declares (a gzip bomb stops there; a short file is refused as truncated); ``ValueError`` naming
    ``file_name`` for a file that is not such a volume."""
    import nibabel as nib

    raw = _uncompressed(stream)
    try:
        head = raw.read(NIFTI2_HEADER_BYTES)
        header = _parse_header(head, file_name, max_voxels)
        data = head + raw.read(max(header.nbytes - len(head), 0))
    except (OSError, EOFError) as exc:
        raise ValueError(f"{file_name}: not a readable NIfTI volume ({exc}).") from exc
    if len(data) < header.nbytes:
        raise ValueError(
            f"{file_name}: truncated: {len(data)} of the {header.nbytes} bytes its header declares."
        )
    klass = nib.Nifti2Image if isinstance(header.nifti, nib.Nifti2Header) else nib.Nifti1Image
    try:
        image: Any = klass.from_bytes(data[: header.nbytes])
        voxels = np.asarray(image.dataobj).reshape(header.shape)
    except Exception as exc:  # nibabel raises many types for files it cannot read
        raise ValueError(f"{file_name}: not a readable NIfTI volume ({type(exc).__name__}: {exc}).") from exc
    if not np.issubdtype(voxels.dtype, np.number) or np.iscomplexobj(voxels):
        raise ValueError(f"{file_name}: voxels of type {voxels.dtype}; a volume holds real numbers.")
    if not np.isfinite(voxels).all():
        raise ValueError(f"{file_name}: the volume holds NaN or infinite values.")
    return Volume(volume_name(file_name), voxels, image)


def _uncompressed(stream: IO[bytes]) -> IO[bytes]:
    gzipped = stream.read(2) == b"\x1f\x8b"
    stream.seek(0)
    return cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb")) if gzipped else stream


def _parse_header(head: bytes, file_name: str, max_voxels: int) -> VolumeHeader:
    header = _nifti_header(head, file_name)
    shape = tuple(int(s) for s in header.get_data_shape())
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{file_name}: a volume must have 3 dimensions, this one has shape {shape}.")
    voxels = int(np.prod(shape))
    if voxels > max_voxels:
        raise ValueError(
            f"{file_name}: volume of {'x'.join(map(str, shape))} voxels exceeds max_voxels={max_voxels}."
        )
    start = max(int(header.get_data_offset()), len(header.binaryblock))
    nbytes = start + voxels * int(header.get_data_dtype().itemsize)
    return VolumeHeader(header, (shape[0], shape[1], shape[2]), nbytes)


def _nifti_header(head: bytes, file_name: str) -> Any:
    """The NIfTI-1 or -2 header at the start of ``head`` (either byte order); single files only."""
    import nibabel as nib

    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        size = klass.template_dtype.itemsize  # 348 or 540: a header starts with its own size
        if len(head) >= size and size in (
            int.from_bytes(head[:4], "little"),
            int.from_bytes(head[:4], "big"),
        ):
            try:
                header = klass(head[:size], check=True)
            except Exception as exc:  # nibabel's HeaderDataError and friends
                raise ValueError(f"{file_name}: not a readable NIfTI header ({exc}).") from exc
            if bytes(header["magic"]).rstrip(b"\x00") not in (b"n+1", b"n+2"):
                raise ValueError(
                    f"{file_name}: a .hdr/.img pair; send the volume as one .nii or .nii.gz file."
                )
            return header
    raise ValueError(f"{file_name}: not a readable NIfTI volume (no NIfTI-1 or NIfTI-2 header).")


def window(data: np.ndarray) -> np.ndarray:
    """A volume's intensities as uint8 between its 0.5 and 99.5 % percentiles (one scale per volume)."""
    lo, hi = np.percentile(data, (0.5, 99.5))
    span = max(float(hi - lo), 1e-6)
    out = np.empty(data.shape, dtype=np.uint8)
    for k in range(data.shape[SLICE_AXIS]):  # a float copy of one slice at a time (a volume: 50 M voxels)
        at = tuple(k if axis == SLICE_AXIS else slice(None) for axis in range(data.ndim))
        scaled = data[at].astype(np.float64)
        scaled -= lo
        scaled /= span
        np.clip(scaled, 0.0, 1.0, out=scaled)
        scaled *= 255.0
        out[at] = np.round(scaled)
    return out


def image_slices(volume: Volume, context: int = 0) -> list[np.ndarray]:
    """The windowed slices (Y, Z, 1 + 2 context) uint8 of an image volume: each slice with its ``context``
    neighbours on either side as channels, in order (k - context .. k + context; the end slices repeated
    beyond the volume's ends), so that a 2D network sees the anatomy through the slice (2.5D)."""
    grey = window(volume.data)
    n = volume.n_slices
    near = [[min(max(j, 0), n - 1) for j in range(k - context, k + context + 1)] for k in range(n)]
    return [np.stack([np.take(grey, j, SLICE_AXIS) for j in js], -1) for js in near]


def label_slices(volume: Volume, num_classes: int) -> list[np.ndarray]:
    """The masks (Y, Z) int64 of a label volume; ``ValueError`` naming the file for values outside the
    label map or non-integer labels."""
    data = volume.data
    if not np.allclose(data, np.round(data)):
        raise ValueError(f"{volume.name}: a label volume must hold integer class indices.")
    labels = np.round(data).astype(np.int64)
    bad = sorted(set(np.unique(labels).tolist()) - set(range(num_classes)))
    if bad:
        raise ValueError(
            f"{volume.name}: label values {bad[:5]} are outside the label map (0..{num_classes - 1})."
        )
    return [np.take(labels, k, SLICE_AXIS) for k in range(volume.n_slices)]


def stack(slices: list[np.ndarray]) -> np.ndarray:
    """Masks (Y, Z) back into a volume (X, Y, Z)."""
    return np.stack(slices, axis=SLICE_AXIS)


def label_volume_bytes(labels: np.ndarray, like: Volume) -> bytes:
    """``labels`` (X, Y, Z) as a gzipped NIfTI file with the affine and header of ``like`` (its
    orientation, spacing and size), voxels uint8 class indices (no intensity scaling)."""
    if labels.shape != like.data.shape:
        raise ValueError(f"{like.name}: labels of shape {labels.shape} for a volume of {like.data.shape}.")
    header = like.image.header.copy()
    header.set_data_dtype(np.uint8)
    out = type(like.image)(labels.astype(np.uint8), like.image.affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    return gzip.compress(out.to_bytes(), compresslevel=6)


def read_volume_bytes(data: bytes) -> Any:
    """A NIfTI image from the bytes of a ``.nii`` or ``.nii.gz`` file (tests and callers holding bytes)."""
    import nibabel as nib

    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    nifti2 = int.from_bytes(raw[:4], "little") == 540 or int.from_bytes(raw[:4], "big") == 540  # sizeof_hdr
    return nib.Nifti2Image.from_bytes(raw) if nifti2 else nib.Nifti1Image.from_bytes(raw)


def load_volume_folder(
    images_dir: Path, masks_dir: Path, num_classes: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[str], dict[str, Volume]]:
    """Pair image and label volumes by name (case-insensitive) and cut them into slices: images (Y, Z, 1)
    uint8, masks (Y, Z) int64 and slice ids, and each label volume by name (what the output is written
    like). Unpaired files, and pairs of different shapes, raise ``ValueError`` naming them."""
    images = {volume_name(p).lower(): p for p in sorted(images_dir.iterdir()) if is_volume(p)}
    labels = {volume_name(p).lower(): p for p in sorted(masks_dir.iterdir()) if is_volume(p)}
    if not images:
        raise ValueError(f"{images_dir}: no NIfTI volumes ({', '.join(VOLUME_SUFFIXES)}).")
    only_img, only_lab = sorted(set(images) - set(labels)), sorted(set(labels) - set(images))
    if only_img or only_lab:
        raise ValueError(
            f"unpaired volumes: images without labels {only_img}; labels without an image {only_lab}."
        )
    out_images: list[np.ndarray] = []
    out_masks: list[np.ndarray] = []
    ids: list[str] = []
    like: dict[str, Volume] = {}
    for key in sorted(images):
        image, label = read_volume(images[key]), read_volume(labels[key])
        if image.data.shape != label.data.shape:
            raise ValueError(
                f"{image.name}: image volume {image.data.shape} and label volume {label.data.shape} differ."
            )
        out_images += image_slices(image)
        out_masks += label_slices(label, num_classes)
        ids += [slice_id(image.name, k) for k in range(image.n_slices)]
        like[image.name] = label
    return out_images, out_masks, ids, like


def volume_report(ids: list[str], noise_prob: np.ndarray, flagged: np.ndarray) -> list[dict[str, Any]]:
    """One verdict per volume from its slices': flagged when any slice is, its probability of holding a
    wrong mask the highest of its slices', and which slices look wrong (most doubtful first)."""
    by: dict[str, list[int]] = {}
    for i, sid in enumerate(ids):
        by.setdefault(parse_slice_id(sid)[0], []).append(i)
    rows = []
    for name, idx in by.items():
        order = sorted((i for i in idx if flagged[i]), key=lambda i: -float(noise_prob[i]))
        rows.append(
            {
                "volume": name,
                "slices": len(idx),
                "flagged": bool(order),
                "noise_probability": float(np.max(noise_prob[idx])),
                "flagged_slices": [parse_slice_id(ids[i])[1] for i in order],
            }
        )
    return sorted(rows, key=lambda r: -r["noise_probability"])
