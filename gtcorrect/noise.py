"""Simulated annotation noise: corrupt a seeded fraction alpha of the masks (docs/METHOD.md).

Shape legend: H, W mask height and width; N masks. Masks are (H, W) integer class indices
(0 = background); every foreground class's region is corrupted with the same transform.

Corruption types: dilation and erosion by a disk (exact, via Euclidean distance transforms), an
affine rotation about the object's centre plus a shift, polygon simplification of the contour (a
coarse annotator; skimage ``find_contours`` + ``approximate_polygon`` + ``draw.polygon``) and boundary
distortion (the signed distance to the boundary plus smooth random noise). Lengths in ``NoiseSpec`` are
pixels at ``reference_size`` and scale with sqrt(H * W) / reference_size, so the same spec applied to
a 600 px original and to its 128 px resize gives the same relative noise.

Empty masks cannot be dilated, eroded, moved or simplified. They are corrupted only when there are not
enough non-empty masks, by adding a spurious disk (type "spurious").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from scipy import ndimage
from skimage import draw, measure

from gtcorrect.metrics import dice

NOISE_TYPES: tuple[str, ...] = ("dilation", "erosion", "affine", "polygon", "boundary")
_RETRIES = 8


@dataclass(frozen=True)
class NoiseSpec:
    """How many masks to corrupt (alpha) and how strongly; lengths in pixels at ``reference_size``.

    weights: relative probability of each type in ``NOISE_TYPES`` order
    (dilation, erosion, affine, polygon, boundary).
    """

    alpha: float
    weights: tuple[float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 0.0)
    radius: tuple[float, float] = (3.0, 8.0)  # dilation / erosion disk radius
    rotation_max: float = 20.0  # degrees, uniform in [-max, max]
    shift: tuple[float, float] = (5.0, 15.0)  # affine shift length, random direction
    tolerance: tuple[float, float] = (3.0, 8.0)  # polygon simplification tolerance
    boundary_amplitude: tuple[float, float] = (3.0, 8.0)  # max boundary displacement
    reference_size: int = 128

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0 or math.isnan(self.alpha):
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}.")
        if len(self.weights) != len(NOISE_TYPES) or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError(
                f"weights must be {len(NOISE_TYPES)} non-negative numbers, not all 0, got {self.weights}."
            )
        for name in ("radius", "shift", "tolerance", "boundary_amplitude"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range (lo, hi) with 0 <= lo <= hi, got {(lo, hi)}.")
        if self.reference_size <= 0:
            raise ValueError(f"reference_size must be positive, got {self.reference_size}.")


def _mixed_weights(boundary: bool) -> tuple[float, float, float, float, float]:
    return (1.0, 1.0, 1.0, 1.0, 1.0 if boundary else 0.0)


def moderate_mixed(alpha: float, *, boundary: bool = False) -> NoiseSpec:
    """Realistic non-expert noise: radius 3-8, rotation <= 20 deg + shift 5-15, tolerance 3-8."""
    return NoiseSpec(alpha, _mixed_weights(boundary), (3.0, 8.0), 20.0, (5.0, 15.0), (3.0, 8.0), (3.0, 8.0))


def strong_mixed(alpha: float, *, boundary: bool = False) -> NoiseSpec:
    """Strong noise: radius 8-14, rotation <= 35 deg + shift 12-25, tolerance 8-14."""
    return NoiseSpec(
        alpha, _mixed_weights(boundary), (8.0, 14.0), 35.0, (12.0, 25.0), (8.0, 14.0), (8.0, 14.0)
    )


def systematic(alpha: float) -> NoiseSpec:
    """A biased annotator: every corrupted mask is dilated with radius 4-8."""
    return NoiseSpec(alpha, (1.0, 0.0, 0.0, 0.0, 0.0), radius=(4.0, 8.0))


def systematic_erosion(alpha: float) -> NoiseSpec:
    """A biased annotator who draws too tight: every corrupted mask is eroded with radius 4-8."""
    return NoiseSpec(alpha, (0.0, 1.0, 0.0, 0.0, 0.0), radius=(4.0, 8.0))


# Read-only so that the package keeps no module-level mutable state.
PRESETS: Mapping[str, Callable[[float], NoiseSpec]] = MappingProxyType(
    {
        "moderate": moderate_mixed,
        "strong": strong_mixed,
        "systematic": systematic,
        "systematic_erosion": systematic_erosion,
    }
)


@dataclass(frozen=True)
class NoiseTruth:
    """What happened to one mask. pixel_noise = 1 - Dice(noisy, clean); 0 for untouched masks."""

    flag: bool
    type: str | None
    pixel_noise: float
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class NoiseResult:
    masks: list[np.ndarray]  # N (H, W) int64, noisy copies
    truth: list[NoiseTruth]


def _dilate(region: np.ndarray, r: float) -> np.ndarray:
    return ndimage.distance_transform_edt(~region) <= r


def _erode(region: np.ndarray, r: float, border_is_background: bool = False) -> np.ndarray:
    # Padded so that the image border does not count as background (an object at the edge stays there),
    # unless asked: a mask that fills the whole image can only shrink from the border.
    padded = np.pad(region, 1, mode="constant" if border_is_background else "edge")
    return (ndimage.distance_transform_edt(padded) > r)[1:-1, 1:-1]


def _affine(region: np.ndarray, angle_deg: float, shift: tuple[float, float]) -> np.ndarray:
    centre = np.array(ndimage.center_of_mass(region))
    a = math.radians(angle_deg)
    inv = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    # output o <- input inv @ (o - centre - shift) + centre
    offset = centre - inv @ (centre + np.asarray(shift))
    out = ndimage.affine_transform(region.astype(np.float32), inv, offset=offset, order=1, cval=0.0)
    return out >= 0.5


def _polygon(region: np.ndarray, tol: float) -> np.ndarray:
    padded = np.pad(region, 1).astype(np.float32)
    out = np.zeros(padded.shape, dtype=bool)
    for contour in measure.find_contours(padded, 0.5):
        poly = measure.approximate_polygon(contour, tolerance=tol)
        if len(poly) < 3:
            continue
        rr, cc = draw.polygon(poly[:, 0], poly[:, 1], shape=padded.shape)
        fill = np.zeros_like(out)
        fill[rr, cc] = True
        out ^= fill  # XOR so that holes (inner contours) stay holes
    return out[1:-1, 1:-1]


def _boundary(region: np.ndarray, amp: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    sdf = ndimage.distance_transform_edt(region) - ndimage.distance_transform_edt(~region)
    noise = ndimage.gaussian_filter(rng.standard_normal(region.shape), sigma=max(4.0 * scale, 1.0))
    noise /= max(float(np.abs(noise).max()), 1e-12)
    return sdf + amp * noise > 0


def _params(kind: str, spec: NoiseSpec, scale: float, rng: np.random.Generator) -> dict[str, float]:
    if kind in ("dilation", "erosion"):
        return {"radius": rng.uniform(*spec.radius) * scale}
    if kind == "affine":
        length, theta = rng.uniform(*spec.shift) * scale, rng.uniform(0, 2 * math.pi)
        return {
            "angle": rng.uniform(-spec.rotation_max, spec.rotation_max),
            "dy": length * math.sin(theta),
            "dx": length * math.cos(theta),
        }
    if kind == "polygon":
        return {"tolerance": rng.uniform(*spec.tolerance) * scale}
    return {"amplitude": rng.uniform(*spec.boundary_amplitude) * scale}


def _apply_region(
    region: np.ndarray, kind: str, p: dict[str, float], scale: float, rng: np.random.Generator
) -> np.ndarray:
    if kind == "dilation":
        return _dilate(region, p["radius"])
    if kind == "erosion":
        return _erode(region, p["radius"])
    if kind == "affine":
        return _affine(region, p["angle"], (p["dy"], p["dx"]))
    if kind == "polygon":
        return _polygon(region, p["tolerance"])
    return _boundary(region, p["amplitude"], scale, rng)


def _apply(
    mask: np.ndarray, kind: str, p: dict[str, float], scale: float, rng: np.random.Generator
) -> np.ndarray:
    """Apply one transform to every foreground class's region; classes painted in index order."""
    out = np.zeros_like(mask)
    for k in np.unique(mask[mask > 0]):
        out[_apply_region(mask == k, kind, p, scale, rng)] = k
    return out


def _valid(noisy: np.ndarray, clean: np.ndarray) -> bool:
    """A corruption must change the mask without deleting a class entirely."""
    if np.array_equal(noisy, clean):
        return False
    return set(np.unique(clean[clean > 0]).tolist()) <= set(np.unique(noisy[noisy > 0]).tolist())


def _weaken(p: dict[str, float]) -> dict[str, float]:
    return {k: v * 0.6 if k != "angle" else v for k, v in p.items()}


def _corrupt(
    mask: np.ndarray, spec: NoiseSpec, probs: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, str, dict[str, float]]:
    scale = math.sqrt(mask.shape[0] * mask.shape[1]) / spec.reference_size
    if not (mask > 0).any():
        r = max(rng.uniform(*spec.radius) * scale * 2.0, 1.0)
        cy, cx = rng.uniform(0, mask.shape[0]), rng.uniform(0, mask.shape[1])
        rr, cc = draw.disk((cy, cx), r, shape=mask.shape)
        out = mask.copy()
        out[rr, cc] = 1
        out[int(min(cy, mask.shape[0] - 1)), int(min(cx, mask.shape[1] - 1))] = 1
        return out, "spurious", {"radius": r}
    kind = NOISE_TYPES[int(rng.choice(len(NOISE_TYPES), p=probs))]
    p = _params(kind, spec, scale, rng)
    for attempt in range(_RETRIES):
        noisy = _apply(mask, kind, p, scale, rng)
        if _valid(noisy, mask):
            return noisy, kind, p
        # Too strong (erosion emptied a small object) or too weak: shrink, then resample.
        p = _weaken(p) if attempt % 2 == 0 else _params(kind, spec, scale, rng)
    # Last resort keeps the promise that a flagged mask differs: the smallest visible change (for a mask
    # that fills the image, its outermost ring of pixels).
    for kind, p in (("dilation", {"radius": 1.0}), ("erosion", {"radius": 1.0})):
        noisy = _apply(mask, kind, p, scale, rng)
        if _valid(noisy, mask):
            return noisy, kind, p
    noisy = np.where(_erode(mask > 0, 1.0, border_is_background=True), mask, 0)
    if _valid(noisy, mask):
        return noisy, "erosion", {"radius": 1.0}
    raise ValueError(f"could not corrupt a mask of shape {mask.shape} without deleting a class.")


def _check_mask(i: int, m: np.ndarray) -> None:
    if m.ndim != 2:
        raise ValueError(f"mask {i} must be (H, W), got shape {m.shape}.")
    if m.size and m.min() < 0:
        raise ValueError(f"mask {i} has negative class indices.")


def corrupt_stream(
    masks: Iterable[np.ndarray], nonempty: Sequence[bool], spec: NoiseSpec, seed: int
) -> Iterator[tuple[np.ndarray, NoiseTruth]]:
    """``simulate_noise`` one mask at a time, for folders too large to hold: ``nonempty`` (N,) says which
    of the N masks have foreground (a first pass), ``masks`` yields them again in the same order. Yields
    each noisy copy (H, W) int64 and its truth; the same seed gives the same result as ``simulate_noise``.
    """
    rng = np.random.default_rng(seed)
    n = len(nonempty)
    n_corrupt = int(round(spec.alpha * n))
    order_full = [i for i in rng.permutation(n).tolist() if nonempty[i]]
    order_empty = [i for i in rng.permutation(n).tolist() if not nonempty[i]]
    chosen = set((order_full + order_empty)[:n_corrupt])
    probs = np.asarray(spec.weights, dtype=np.float64) / sum(spec.weights)
    count = 0
    for i, mask in enumerate(masks):
        _check_mask(i, mask)
        count += 1
        clean = np.asarray(mask, dtype=np.int64)
        if i not in chosen:
            yield clean.copy(), NoiseTruth(False, None, 0.0)
            continue
        noisy, kind, p = _corrupt(clean, spec, probs, rng)
        k = max(int(clean.max()), int(noisy.max())) + 1
        yield noisy, NoiseTruth(True, kind, 1.0 - dice(noisy, clean, num_classes=max(k, 2)), dict(p))
    if count != n:
        raise ValueError(f"got {count} masks for {n} nonempty flags.")


def simulate_noise(masks: Sequence[np.ndarray], spec: NoiseSpec, seed: int) -> NoiseResult:
    """Corrupt exactly round(alpha * N) of N (H, W) masks, chosen by ``seed``; return copies and truth.

    Non-empty masks are chosen first (see the module docstring). alpha 0 returns identical copies.
    """
    for i, m in enumerate(masks):
        _check_mask(i, m)
    pairs = list(corrupt_stream(masks, [bool((m > 0).any()) for m in masks], spec, seed))
    return NoiseResult([m for m, _ in pairs], [t for _, t in pairs])
