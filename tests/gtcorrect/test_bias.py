"""The annotator check (gtcorrect.bias) on seeded synthetic data: two annotators, one draws every
outline 3 px too wide; the check flags their masks and moves the outlines back."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from gtcorrect.annotators import shift_outline
from gtcorrect.bias import AnnotatorCheck, check_annotators
from gtcorrect.checkpoint import Checkpoint
from gtcorrect.config import TrainConfig
from gtcorrect.errors import TrainingStopped
from gtcorrect.metrics import foreground_dice, recognition_metrics
from gtcorrect.quality import CORRECTIONS_APPLIED, Judged, Validation, summarise
from gtcorrect.trainer import fit
from gtcorrect.types import Progress, TrainingData
from gtcorrect.verdict import flag
from tests.gtcorrect.synthetic import PLUMBING, make_shapes
from tests.gtcorrect.test_fit import tiny


def _panel(
    wide: int, jitter: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray]:
    images, truth = make_shapes(40, size=48, seed=3)
    names = ["a" if i % 2 else "b" for i in range(40)]
    given = np.stack([shift_outline(t, wide) if n == "b" else t for t, n in zip(truth, names, strict=True)])
    # A network trained on both annotators lands between them (``jitter``: px of error per image).
    errors = np.random.default_rng(1).normal(0.0, jitter, len(truth))
    predicted = np.stack([shift_outline(t, wide / 2 + e) for t, e in zip(truth, errors, strict=True)])
    return images, truth, given, names, predicted


def test_shift_outline_moves_the_boundary_by_whole_pixels() -> None:
    disc = np.zeros((21, 21), dtype=np.int64)
    yy, xx = np.mgrid[:21, :21]
    disc[(yy - 10) ** 2 + (xx - 10) ** 2 <= 16] = 1
    grown, shrunk = shift_outline(disc, 2), shift_outline(disc, -2)
    assert grown.sum() > disc.sum() > shrunk.sum() > 0
    assert np.array_equal(shift_outline(shrunk, 2) & disc, shift_outline(shrunk, 2))
    assert np.array_equal(shift_outline(disc, 0), disc)
    assert np.array_equal(shift_outline(np.zeros_like(disc), 3), np.zeros_like(disc))


def _check(
    panel: tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray],
    noise: np.ndarray,
    trusted: bool = True,
) -> AnnotatorCheck | None:
    images, _, given, names, predicted = panel
    return check_annotators(TrainConfig(), images, given, names, predicted, noise, trusted=trusted)


def test_a_wide_annotator_is_flagged_and_moved_back() -> None:
    panel = _panel(wide=3)
    _, truth, given, names, _ = panel
    n = given.shape[0]
    check = _check(panel, np.zeros(n))  # the network doubts no mask: the bias is learnt, unseen
    assert check is not None
    wide = np.array([x == "b" for x in names])
    flags = flag(check.noise_prob, TrainConfig().g)
    assert flags[wide].mean() > 0.9 and not flags[~wide].any()
    assert check.noise_prob[wide].min() > check.noise_prob[~wide].max()
    assert set(check.moved) <= set(np.flatnonzero(wide)) and len(check.moved) > 0.8 * wide.sum()
    idx = sorted(check.moved)
    before = foreground_dice(given[idx], truth[idx]).mean()
    after = foreground_dice(np.stack([check.moved[i] for i in idx]), truth[idx]).mean()
    assert after > before + 0.1
    [finding] = check.summary
    assert finding["annotator"] == "b" and finding["shift_px"] == pytest.approx(-3, abs=0.6)
    assert finding["share"] > 0.9  # every one of their masks is 3 px wide
    # The job's summary: corrections applied for the moved outlines, and a warning naming the annotator.
    judged = Judged(
        check.noise_prob,
        flags,
        np.zeros(n, bool),
        np.zeros(n, bool),
        np.ones(n, bool),
        np.ones(n, bool),
        0.5,
        (0.4, 0.6),
        None,
    )
    validation = Validation(0.9, {"foreground": 0.9}, 8, "held_out")
    config = replace(TrainConfig(), quality=replace(TrainConfig().quality, min_samples=10))
    quality, _, _ = summarise(config, judged, validation, None, check.summary, len(check.moved))
    assert quality.corrections == CORRECTIONS_APPLIED and quality.n_proposed == len(idx)
    assert "a biased annotator's outlines moved back" in quality.corrections_reason
    assert [w.code for w in quality.warnings] == ["annotator_bias"]


def test_with_network_evidence_both_enter_every_mask() -> None:
    # An imperfect network: each outline offset is off by about a pixel, so the evidence overlaps.
    panel = _panel(wide=3, jitter=1.0)
    names = panel[3]
    n = len(names)
    wide = np.array([x == "b" for x in names])
    noise = np.random.default_rng(0).uniform(0.0, 0.8, n)  # a network's verdict that does not rank them
    check = _check(panel, noise)
    assert check is not None
    g = TrainConfig().g
    fused = check.noise_prob
    # The annotator evidence ranks, the flags follow the combined probability ...
    assert recognition_metrics(wide, 1.0 - fused)["auroc"] > 0.95
    assert flag(fused, g)[wide].mean() > 0.9 and flag(fused, g)[~wide].mean() < 0.2
    # ... the network's doubts about the other annotator's masks are mostly answered by their outlines ...
    assert flag(fused, g)[~wide].sum() < flag(noise, g)[~wide].sum()
    # ... and the network still counts: the same outlines under a more doubtful verdict look more wrong.
    more = _check(panel, np.minimum(noise * 1.2 + 0.1, 1.0))
    assert more is not None
    assert (more.noise_prob >= fused).all() and (more.noise_prob > fused).mean() > 0.5


def test_agreeing_annotators_change_nothing() -> None:
    panel = _panel(wide=0)
    assert _check(panel, np.zeros(len(panel[3]))) is None


def _wide_annotator_set() -> tuple[np.ndarray, list[str], TrainingData]:
    images, truth = make_shapes(48, size=32, seed=5)
    names = ["a" if i % 2 else "b" for i in range(48)]
    given = np.stack([shift_outline(t, 3) if n == "b" else t for t, n in zip(truth, names, strict=True)])
    return truth, names, TrainingData(images, given, [f"s{i}" for i in range(48)], annotators=names)


def _wide_config(**t: object) -> TrainConfig:
    base = tiny(epochs=12, quality=replace(PLUMBING, val_fraction=0.1, min_val_samples=2, min_samples=10))
    return replace(base, t=replace(base.t, **t))


def test_fit_flags_the_wide_annotator_and_hands_back_moved_outlines() -> None:
    truth, names, data = _wide_annotator_set()
    given = data.masks
    result = fit(_wide_config(), data)
    wide = np.array([n == "b" for n in names])
    train = ~result.held_out
    [finding] = result.quality.annotator_bias
    assert finding["annotator"] == "b" and finding["shift_px"] < -1
    assert result.flagged[wide & train].mean() > 0.8
    moved = [i for i in result.corrected if wide[i]]
    assert moved and not any(result.held_out[i] for i in result.corrected)
    before = foreground_dice(given[moved], truth[moved]).mean()
    after = foreground_dice(np.stack([result.corrected[i] for i in moved]), truth[moved]).mean()
    assert after > before
    with pytest.raises(ValueError, match="2 annotators for 48 images"):
        TrainingData(data.images, given, [f"s{i}" for i in range(48)], annotators=["a", "b"])


def test_bias_aware_training_learns_the_moved_outlines_and_resumes_exactly() -> None:
    truth, names, data = _wide_annotator_set()
    # A T stage long enough to learn from its targets.
    config = _wide_config(epochs=10)
    aware, plain = fit(config, data), fit(replace(config, t=replace(config.t, annotator_targets=False)), data)
    [finding] = aware.quality.annotator_bias
    assert finding["trained_moved"] > 10 and "learnt from with the outline moved back" in " ".join(
        w.message for w in aware.quality.warnings
    )
    assert plain.quality.annotator_bias[0]["trained_moved"] == 0
    # The network learnt the true outlines rather than halfway to the wide annotator's.
    learnt = [foreground_dice(r.predicted, truth).mean() for r in (aware, plain)]
    assert learnt[0] > learnt[1] + 0.02
    # A checkpoint taken in the T stage carries the moved outlines: resuming is exact.
    saved: list[Checkpoint] = []
    events: list[Progress] = []
    stop = len(aware.history) - 2
    with pytest.raises(TrainingStopped):
        fit(
            config,
            data,
            callbacks=[events.append],
            should_stop=lambda: len(events) >= stop,
            checkpoint=saved.append,
        )
    assert saved[-1].phase.startswith("t_")
    resumed = fit(config, data, resume=Checkpoint.from_bytes(saved[-1].to_bytes()))
    for name, tensor in aware.model.state_dict.items():
        assert torch.equal(tensor, resumed.model.state_dict[name]), name


def test_a_network_the_job_cannot_vouch_for_flags_but_moves_nothing() -> None:
    panel = _panel(wide=3)
    n = len(panel[3])
    check = _check(panel, np.zeros(n), trusted=False)
    assert check is not None
    assert flag(check.noise_prob, TrainConfig().g).any() and check.moved == {}
    assert check.summary[0]["proposed"] == 0
