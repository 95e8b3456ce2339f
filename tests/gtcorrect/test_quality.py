"""The split cannot collapse onto one odd mask, and a run judges itself (gtcorrect.quality), on seeded
synthetic data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gtcorrect import fit
from gtcorrect.config import GStageConfig, QualityConfig, TrainConfig
from gtcorrect.gstage import fit_gmm, is_bimodal, not_bimodal_because
from gtcorrect.noise import simulate_noise, strong_mixed
from gtcorrect.quality import Evidence, assess, holdout_indices
from gtcorrect.selftest import Fetch
from tests.gtcorrect.synthetic import make_noisy_set, run_evidence
from tests.gtcorrect.test_fit import tiny


def _two_groups_and_an_outlier(seed: int = 0) -> np.ndarray:
    """300 clean scores, 100 noisy ones and one tiny object whose 'excess' score is far below all."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.02, 0.01, 300), rng.normal(0.3, 0.05, 100), [-5.0]])


def test_one_outlier_does_not_take_a_component_of_its_own() -> None:
    losses = _two_groups_and_an_outlier()
    g = GStageConfig()
    clean_prob, record = fit_gmm(losses, g, seed=0)
    flags = clean_prob <= g.tau
    assert flags[300:400].sum() >= 90 and flags[:300].sum() <= 10, record
    assert min(record.weights) > 0.1 and is_bimodal(record, 1.41, g.min_component_weight)
    # The paper's min-max scaling puts the outlier alone at 0: its component holds one mask.
    _, old = fit_gmm(losses, replace(g, robust_quantile=0.0), seed=0)
    assert min(old.weights) < g.min_component_weight or old.n_flagged > 390


def test_a_side_of_one_mask_is_no_evidence_of_two_groups() -> None:
    rng = np.random.default_rng(1)
    losses = np.concatenate([rng.normal(0.1, 0.02, 200), [3.0]])
    _, record = fit_gmm(losses, GStageConfig(robust_quantile=0.0), seed=0)
    assert not is_bimodal(record, 0.0, 0.03)
    why = not_bimodal_because(record, 0.0, 0.03)
    assert why is not None and ("of 201 masks would be flagged" in why or "smaller component" in why)
    higher = record.separation + 1.0  # separation is tested first
    assert f"below {higher:.2f}" in (not_bimodal_because(record, higher, 0.03) or "")


def test_a_split_that_flags_nearly_every_mask_is_no_evidence() -> None:
    # BU-BIL, seed 0: the final split put 3 of 97 masks in the clean component (S 2.87): a collapse.
    rng = np.random.default_rng(2)
    losses = np.concatenate([rng.normal(0.02, 0.005, 5), rng.normal(0.4, 0.1, 95)])
    g = GStageConfig(robust_quantile=0.0)
    _, record = fit_gmm(losses, g, seed=0)
    assert record.n_flagged >= 90 and record.separation > 1.41
    assert is_bimodal(record, 1.41, g.min_component_weight)  # both sides hold >= 3 %
    assert not is_bimodal(record, 1.41, g.min_component_weight, g.max_flagged_share)
    why = not_bimodal_because(record, 1.41, g.min_component_weight, g.max_flagged_share)
    assert why == (
        f"{record.n_flagged} of 100 masks ({record.n_flagged}%) would be flagged, over 80%: the clean "
        "component has collapsed onto a few masks"
    )


@pytest.mark.parametrize("method", ["gt", "gmm_select"])
def test_no_applied_split_of_a_run_has_a_side_of_one_mask(method: str) -> None:
    data = make_noisy_set(24, 32, alpha=0.3, seed=4).training_data()
    masks = data.masks.copy()
    masks[0] = 0
    masks[0, 16, 16] = 1  # a mask eroded to one pixel: the lowest 'excess' score by far
    data = replace(data, masks=masks)
    result = fit(tiny(method, epochs=6), data)
    g = GStageConfig()
    for record in result.rounds:
        if record.applied:
            assert min(record.n_flagged, 24 - record.n_flagged) >= 1
            assert min(record.weights) >= g.min_component_weight, record


def test_holdout_is_seeded_and_skipped_when_too_small() -> None:
    config = TrainConfig(quality=QualityConfig(val_fraction=0.1, min_val_samples=8))
    train, held = holdout_indices(200, config)
    assert held.size == 20 and np.intersect1d(train, held).size == 0 and train.size == 180
    assert np.array_equal(held, holdout_indices(200, config)[1])
    assert holdout_indices(24, config)[1].size == 0


def _disc(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        cy, cx, r = rng.uniform(12, 20), rng.uniform(12, 20), rng.uniform(5, 9)
        out[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    return out


def _evidence(n: int = 100, noisy: int = 30, val: float | None = 0.9) -> tuple[Evidence, Fetch]:
    """A finished run on discs whose network predicts the true discs; the last ``noisy`` given masks
    are strongly corrupted."""
    truth = _disc(n)
    given = truth.copy()
    if noisy:
        given[n - noisy :] = np.stack(simulate_noise(list(truth[n - noisy :]), strong_mixed(1.0), 0).masks)
    # Without noise: one group of scores, as clean Kvasir-SEG masks give (BENCHMARKS.md: S about 0.9).
    scores = None if noisy else np.random.default_rng(2).normal(0.1, 0.02, n)
    return run_evidence(given, truth, val=val, scores=scores)


def test_gate_opens_when_the_evidence_holds() -> None:
    ev, fetch = _evidence()
    quality, verdict, _ = assess(ev, fetch)
    assert quality.noise_evidence and quality.corrections == "applied", quality.warnings
    assert quality.calibration is not None and quality.calibration.recall > 0.5
    assert quality.calibration.dice_corrected > quality.calibration.dice_corrupted
    assert verdict.proposed.any() and not (verdict.proposed & ~verdict.flagged).any()
    lo, hi = quality.noise_rate_interval or (0.0, 0.0)
    assert lo <= quality.estimated_noise_rate <= hi


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"noisy": 0}, "no_evidence_of_noise"),
        ({"val": 0.3}, "weak_network"),
        ({"val": None}, "no_validation"),
        ({"n": 30, "noisy": 10}, "too_few_samples"),
    ],
)
def test_gate_closes_and_says_why(kw: dict[str, float], code: str) -> None:
    ev, fetch = _evidence(**kw)  # type: ignore[arg-type]
    quality, verdict, _ = assess(ev, fetch)
    codes = {w.code for w in quality.warnings}
    assert code in codes and "corrections_withheld" in codes, codes
    assert quality.corrections == "withheld" and not verdict.proposed.any()
    if code == "no_evidence_of_noise":
        assert not verdict.flagged.any() and quality.noise_evidence is False
        [message] = [w.message for w in quality.warnings if w.code == code]
        g = ev.config.g
        why = not_bimodal_because(
            ev.rounds[-1], ev.config.quality.min_separation, g.min_component_weight, g.max_flagged_share
        )
        assert why and f"no two groups ({why})" in message, message  # which test the split failed
    data = quality.to_dict()
    assert data["corrections"]["status"] == "withheld" and data["corrections"]["reason"]
