"""Simulated annotation noise (gtcorrect.noise) on synthetic discs."""

from __future__ import annotations

import numpy as np
import pytest

from gtcorrect.noise import (
    PRESETS,
    NoiseSpec,
    corrupt_stream,
    moderate_mixed,
    simulate_noise,
    strong_mixed,
    systematic,
)
from tests.gtcorrect.synthetic import make_shapes


def _discs(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        r = rng.uniform(0.1, 0.22) * size
        out.append(((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.int64))
    return out


MASKS = _discs(20)


def test_alpha_zero_is_identity() -> None:
    res = simulate_noise(MASKS, moderate_mixed(0.0), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(res.masks, MASKS, strict=True))
    assert not any(t.flag for t in res.truth)
    assert all(t.pixel_noise == 0.0 and t.type is None for t in res.truth)


@pytest.mark.parametrize(("alpha", "expected"), [(0.3, 6), (0.5, 10), (0.33, 7), (1.0, 20)])
def test_corrupted_count_matches_alpha_and_flagged_masks_differ(alpha: float, expected: int) -> None:
    res = simulate_noise(MASKS, strong_mixed(alpha), seed=2)
    flags = [t.flag for t in res.truth]
    assert sum(flags) == expected
    for noisy, clean, truth in zip(res.masks, MASKS, res.truth, strict=True):
        assert np.array_equal(noisy, clean) != truth.flag
        if truth.flag:
            assert truth.pixel_noise > 0 and noisy.any()


@pytest.mark.parametrize(
    ("preset", "lo", "hi"),
    [(moderate_mixed, 0.12, 0.40), (strong_mixed, 0.30, 0.65), (systematic, 0.12, 0.45)],
)
def test_preset_pixel_noise_in_band(preset: object, lo: float, hi: float) -> None:
    res = simulate_noise(_discs(40, size=128, seed=3), preset(1.0), seed=0)  # type: ignore[operator]
    mean = float(np.mean([t.pixel_noise for t in res.truth]))
    assert lo < mean < hi


def test_strong_is_stronger_than_moderate_and_lengths_scale() -> None:
    masks = _discs(30, size=128, seed=4)
    moderate = np.mean([t.pixel_noise for t in simulate_noise(masks, moderate_mixed(1.0), 0).truth])
    strong = np.mean([t.pixel_noise for t in simulate_noise(masks, strong_mixed(1.0), 0).truth])
    assert strong > moderate + 0.1
    # the same shapes at 4x resolution get about the same relative noise (lengths scale with size)
    big = [np.kron(m, np.ones((4, 4), np.int64)) for m in masks]
    big_noise = np.mean([t.pixel_noise for t in simulate_noise(big, systematic(1.0), 0).truth])
    small_noise = np.mean([t.pixel_noise for t in simulate_noise(masks, systematic(1.0), 0).truth])
    assert big_noise == pytest.approx(small_noise, abs=0.03)


def test_systematic_only_dilates() -> None:
    res = simulate_noise(MASKS, systematic(0.5), seed=0)
    for noisy, clean, t in zip(res.masks, MASKS, res.truth, strict=True):
        if t.flag:
            assert t.type == "dilation"
            assert noisy.sum() > clean.sum() and (noisy[clean == 1] == 1).all()


def test_deterministic_by_seed() -> None:
    a = simulate_noise(MASKS, moderate_mixed(0.5, boundary=True), seed=7)
    b = simulate_noise(MASKS, moderate_mixed(0.5, boundary=True), seed=7)
    c = simulate_noise(MASKS, moderate_mixed(0.5, boundary=True), seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks, strict=True))
    assert a.truth == b.truth
    assert [t.flag for t in a.truth] != [t.flag for t in c.truth] or any(
        not np.array_equal(x, y) for x, y in zip(a.masks, c.masks, strict=True)
    )


def test_tiny_object_erosion_does_not_empty_the_mask() -> None:
    tiny = np.zeros((64, 64), np.int64)
    tiny[30:33, 30:33] = 1
    spec = NoiseSpec(1.0, weights=(0.0, 1.0, 0.0, 0.0, 0.0), radius=(6.0, 8.0))
    res = simulate_noise([tiny] * 5, spec, seed=0)
    for noisy, t in zip(res.masks, res.truth, strict=True):
        assert t.flag and noisy.any() and not np.array_equal(noisy, tiny)


def test_a_mask_filling_the_whole_image_is_still_corrupted() -> None:
    # A user's mask over the whole image once made every job fail in its self-test ("could not corrupt").
    full = np.ones((64, 64), np.int64)
    for kind in range(5):
        spec = NoiseSpec(1.0, weights=tuple(float(k == kind) for k in range(5)))  # type: ignore[arg-type]
        noisy = simulate_noise([full], spec, seed=0).masks[0]
        assert (noisy == 1).any() and not np.array_equal(noisy, full)


def test_class_index_masks_keep_their_classes() -> None:
    m = np.zeros((64, 64), np.int64)
    m[10:30, 10:30] = 1
    m[35:55, 35:55] = 2
    res = simulate_noise([m] * 8, strong_mixed(1.0), seed=5)
    for noisy, t in zip(res.masks, res.truth, strict=True):
        assert set(np.unique(noisy).tolist()) == {0, 1, 2}
        assert t.pixel_noise > 0


def test_empty_masks_are_used_last() -> None:
    masks = [np.zeros((32, 32), np.int64)] * 3 + _discs(3, size=32)
    res = simulate_noise(masks, moderate_mixed(0.5), seed=0)
    assert [t.flag for t in res.truth] == [False] * 3 + [True] * 3
    res = simulate_noise(masks, moderate_mixed(1.0), seed=0)
    assert {t.type for t in res.truth[:3]} == {"spurious"}
    assert all(r.any() for r in res.masks)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_bad_alpha_raises(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha must lie in"):
        moderate_mixed(alpha)


def test_bad_spec_raises() -> None:
    with pytest.raises(ValueError, match=r"radius must be a range"):
        NoiseSpec(0.5, radius=(8.0, 3.0))
    with pytest.raises(ValueError, match="weights must be 5"):
        NoiseSpec(0.5, weights=(0.0, 0.0, 0.0, 0.0, 0.0))


def test_the_stream_gives_what_simulate_noise_gives_one_mask_at_a_time() -> None:
    _, shapes = make_shapes(24, size=40, seed=4)
    masks = [*shapes, np.zeros((40, 40), np.int64), np.zeros((40, 40), np.int64)]
    whole = simulate_noise(masks, PRESETS["strong"](0.5), 11)
    nonempty = [bool(m.any()) for m in masks]
    streamed = list(corrupt_stream(iter(masks), nonempty, PRESETS["strong"](0.5), 11))
    assert all(np.array_equal(a, b) for a, (b, _) in zip(whole.masks, streamed, strict=True))
    assert whole.truth == [t for _, t in streamed]
    with pytest.raises(ValueError, match="got 25 masks for 26"):
        list(corrupt_stream(iter(masks[:-1]), nonempty, PRESETS["strong"](0.5), 11))
