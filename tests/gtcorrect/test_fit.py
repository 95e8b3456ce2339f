from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch

from gtcorrect import (
    Checkpoint,
    CheckpointError,
    InvalidTrainingInput,
    Progress,
    TrainConfig,
    TrainingData,
    TrainingStopped,
    fit,
)
from gtcorrect.config import METHODS, AugmentConfig, GStageConfig, NetConfig, TStageConfig, schedule_epochs
from gtcorrect.gstage import score_samples
from gtcorrect.metrics import dice as metrics_dice
from gtcorrect.model import ModelBundle
from gtcorrect.networks import mixed_precision, use_amp
from gtcorrect.types import LabelMap
from tests.gtcorrect.synthetic import PLUMBING, make_noisy_set


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(method: str = "gt", **kw: object) -> TrainConfig:
    base = TrainConfig(
        method=method,  # type: ignore[arg-type]
        image_size=32,
        batch_size=8,
        lr=3e-3,
        epochs=4,
        net=NetConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1),
        # Tiny sets split lopsidedly: no collapse guard here (tests/gtcorrect/test_quality.py has it).
        g=GStageConfig(warmup_epochs=3, rounds_max=2, epochs_per_round=1, max_flagged_share=1.0),
        t=TStageConfig(epochs=3, early_learning="fixed", early_learning_fixed_epochs=1, rampup_epochs=2),
        # The plumbing of flags and corrections, not the self-assessment (tests/gtcorrect/test_quality.py).
        quality=PLUMBING,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = ((a > 0) & (b > 0)).sum((1, 2))
    denom = (a > 0).sum((1, 2)) + (b > 0).sum((1, 2))
    return np.where(denom > 0, 2 * inter / np.maximum(denom, 1), 1.0)


def test_gt_recognises_and_corrects_strongly_corrupted_masks() -> None:
    data = make_noisy_set(64, 48, alpha=0.5, seed=0)
    config = tiny(image_size=48, g=GStageConfig(warmup_epochs=8, rounds_max=3, epochs_per_round=2))
    events: list[Progress] = []
    result = fit(config, data.training_data(), callbacks=[events.append])
    assert result.flagged[data.corrupted].mean() >= 0.8
    assert (result.flagged == data.corrupted).mean() >= 0.8
    idx = sorted(result.corrected)
    assert idx == np.flatnonzero(result.flagged).tolist()
    corrected = np.stack([result.corrected[i] for i in idx])
    assert _dice(corrected, data.clean[idx]).mean() > _dice(data.noisy[idx], data.clean[idx]).mean() + 0.1
    *epochs, assessing = events
    assert [e.epoch for e in epochs] == list(range(1, len(epochs) + 1)) and epochs == result.history
    assert epochs[-1].total_epochs == len(epochs) and epochs[-1].phase == "t_correct"
    last = (assessing.phase, assessing.epoch, assessing.total_epochs)
    assert last == ("assessing", len(epochs), len(epochs))
    assert [e.phase for e in events[:8]] == ["warmup"] * 8
    assert result.rounds[0].round == 0 and len(result.rounds) >= 2
    assert set(np.unique(result.round_decided)) <= {r.round for r in result.rounds}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_returns_a_full_result(method: str) -> None:
    data = make_noisy_set(16, 32, alpha=0.5, seed=1).training_data(with_val=4)
    result = fit(tiny(method, epochs=3, t=replace(tiny().t, epochs=2)), data)
    n = 12
    assert result.ids == data.ids and result.clean_prob.shape == (n,) and result.flagged.dtype == bool
    assert result.round_decided.shape == (n,) and result.sample_loss.shape == (n,)
    assert isinstance(result.model, ModelBundle) and result.model.in_channels == 3
    assert 0.0 <= result.metrics["val_dice"] <= 1.0
    # One structure (polyp): its Dice of each given mask to the kept network's prediction.
    assert (
        result.class_dice is not None and result.predicted is not None and result.class_dice.shape == (n, 1)
    )
    expected = [
        metrics_dice(p, m) if (p > 0).any() or (m > 0).any() else np.nan
        for p, m in zip(result.predicted, data.masks, strict=True)
    ]
    np.testing.assert_allclose(result.class_dice[:, 0], expected)
    logits = result.model.build()(torch.as_tensor(data.images[:2]))
    assert logits.shape == (2, 2, 32, 32)
    if method in ("noisy", "clean"):
        assert np.all(result.clean_prob == 1.0) and not result.flagged.any() and result.rounds == []
    if method in ("gt", "gmm_select"):
        assert result.rounds and np.array_equal(result.flagged, result.clean_prob <= 0.5)
    if method == "coteaching":
        assert result.flagged.sum() == round(0.3 * n)
        assert np.all(result.sample_loss[result.flagged].min() >= result.sample_loss[~result.flagged].max())


@pytest.mark.parametrize(
    ("config", "stop_after"),
    [
        (tiny(t=replace(tiny().t, correction="soft", elr=True), augment=AugmentConfig(intensity=0.2)), 6),
        (tiny(t=replace(tiny().t, early_learning="curve")), 4),
        (tiny("gmm_select", g=GStageConfig(warmup_epochs=2, sample_loss="trajectory")), 3),
        (tiny("coteaching", coteaching=replace(tiny().coteaching, num_gradual=3)), 2),
        (tiny(amp="on"), 4),  # bfloat16 mixed precision (CPU autocast here; the CUDA default)
    ],
)
def test_resume_from_checkpoint_equals_uninterrupted_run(config: TrainConfig, stop_after: int) -> None:
    data = make_noisy_set(16, 32, alpha=0.5, seed=2).training_data()
    full = fit(config, data)
    saved: list[bytes] = []
    events: list[Progress] = []
    with pytest.raises(TrainingStopped, match=f"epoch {stop_after + 1}"):
        fit(
            config,
            data,
            callbacks=[events.append],
            should_stop=lambda: len(events) >= stop_after,
            checkpoint=lambda ckpt: saved.append(ckpt.to_bytes()),
        )
    assert len(saved) == stop_after
    checkpoint = Checkpoint.from_bytes(saved[-1])
    assert checkpoint.epoch == stop_after
    if checkpoint.phase.startswith("t_"):  # the T stage corrects the G stage's flagged masks
        flagged_then = checkpoint.engine["flagged"].numpy()
        assert set(checkpoint.corrected_masks()) <= set(np.flatnonzero(flagged_then))
    resumed = fit(config, data, resume=checkpoint)
    for name, tensor in full.model.state_dict.items():
        assert torch.equal(tensor, resumed.model.state_dict[name]), name
    np.testing.assert_array_equal(full.clean_prob, resumed.clean_prob)
    np.testing.assert_array_equal(full.flagged, resumed.flagged)
    np.testing.assert_array_equal(full.round_decided, resumed.round_decided)
    assert full.rounds == resumed.rounds and full.history == resumed.history
    assert full.corrected.keys() == resumed.corrected.keys()
    for i in full.corrected:
        np.testing.assert_array_equal(full.corrected[i], resumed.corrected[i])


def test_mixed_precision_trains_in_bfloat16_and_keeps_float32_model_files() -> None:
    data = make_noisy_set(16, 32, alpha=0.3, seed=4).training_data()
    assert not use_amp("auto", torch.device("cpu")) and use_amp("on", torch.device("cpu"))
    result = fit(tiny(amp="on", epochs=2), data)
    assert result.history and all(np.isfinite(v) for p in result.history for v in p.losses.values())
    assert all(t.dtype == torch.float32 for t in result.model.state_dict.values() if t.is_floating_point())
    # The model file is the plain network's: it loads without mixed precision, and a forward pass under
    # it (bfloat16 inside, float32 logits out) gives nearly the same masks.
    plain = result.model.build("cpu")
    amp = mixed_precision(result.model.build("cpu"), torch.device("cpu"))
    inner: list[torch.dtype] = []
    next(m for m in amp.modules() if isinstance(m, torch.nn.Conv2d)).register_forward_hook(
        lambda _m, _i, out: inner.append(out.dtype)
    )
    x = torch.as_tensor(data.images[:4])
    with torch.no_grad():
        fp32, bf16 = plain(x), amp(x)
    assert inner == [torch.bfloat16] and bf16.dtype == torch.float32
    assert (fp32.argmax(1) == bf16.argmax(1)).float().mean() > 0.95


def test_resume_rejects_foreign_checkpoints() -> None:
    data = make_noisy_set(8, 32, seed=3).training_data()
    saved: list[Checkpoint] = []
    full = fit(tiny("noisy", epochs=1), data, checkpoint=saved.append)
    # Resuming from the final checkpoint (a job that died before recording) trains nothing more.
    again = fit(tiny("noisy", epochs=1), data, resume=saved[0])
    assert all(torch.equal(v, again.model.state_dict[k]) for k, v in full.model.state_dict.items())
    assert again.history == full.history
    with pytest.raises(CheckpointError, match="config differs"):
        fit(tiny("noisy", epochs=2), data, resume=saved[0])
    other = TrainingData(data.images, data.masks, [f"x{i}" for i in range(8)])
    with pytest.raises(CheckpointError, match="ids"):
        fit(tiny("noisy", epochs=1), other, resume=saved[0])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        Checkpoint.from_bytes(b"not a checkpoint")


def test_bad_inputs_name_the_value() -> None:
    data = make_noisy_set(6, 32, seed=4).training_data()
    with pytest.raises(InvalidTrainingInput, match="6 training images, fewer than batch_size 8"):
        fit(tiny(), data)
    with pytest.raises(InvalidTrainingInput, match="image_size is 64"):
        fit(tiny(image_size=64, batch_size=2), data)
    with pytest.raises(InvalidTrainingInput, match="g.warmup_epochs: must be >= 1, got 0"):
        fit(tiny(batch_size=2, g=GStageConfig(warmup_epochs=0)), data)
    images = data.images.copy()
    images[0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidTrainingInput, match="t.correction: must be one of .*got str 'fuzzy'"):
        fit(tiny(batch_size=2, t=TStageConfig(correction="fuzzy")), data)  # type: ignore[arg-type]
    with pytest.raises(InvalidTrainingInput, match="NaN"):
        fit(tiny(batch_size=2), TrainingData(images, data.masks, data.ids))


def test_identical_images_flag_nothing_and_t_stage_still_runs() -> None:
    data = make_noisy_set(1, 32, seed=5)
    images = np.repeat(data.images, 8, 0)
    masks = np.repeat(data.clean, 8, 0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    result = fit(tiny(), TrainingData(images, masks, [str(i) for i in range(8)]))
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched
    assert not result.flagged.any() and result.corrected == {}
    assert np.ptp(result.clean_prob) < 1e-3  # identical masks, all but the same verdict
    assert result.history[-1].phase == "t_early" and "clean" in result.history[-1].losses


@pytest.mark.parametrize(
    ("g", "t", "check"),
    [
        (GStageConfig(warmup_epochs=3, feedback=False, max_flagged_share=1.0), None, "one_round"),
        (None, {"early_learning": "none"}, "correct_from_start"),
        (None, {"correction": "none"}, "drop_flagged"),
        (None, {"keep": "student", "correction": "soft"}, "soft_student"),
    ],
)
def test_ablation_switches(g: GStageConfig | None, t: dict | None, check: str) -> None:
    data = make_noisy_set(16, 32, alpha=0.5, seed=6).training_data()
    config = tiny(g=g or tiny().g, t=replace(tiny().t, **(t or {})))
    result = fit(config, data)
    phases = [e.phase for e in result.history]
    t_events = [e for e in result.history if e.phase.startswith("t_")]
    assert len(result.history) == schedule_epochs(config) and len(t_events) >= 3 and result.flagged.any()
    if check == "one_round":
        # one G-stage round, then the final verdict after the last T epoch
        assert [r.round for r in result.rounds] == [0, 1] and "g_round" not in phases
        assert result.history[-1].round is None and result.rounds[-1].n_flagged == result.flagged.sum()
    if check == "correct_from_start":
        assert all(e.phase == "t_correct" for e in t_events)
    if check == "drop_flagged":
        assert result.corrected == {} and all("flagged" not in e.losses for e in t_events)
    if check == "soft_student":
        soft = next(iter(result.corrected.values()))
        assert soft.shape == (2, 32, 32) and soft.dtype == np.float32
        assert np.allclose(soft.sum(0), 1.0, atol=1e-5)


@pytest.mark.parametrize("detector", ["evidence", "loss"])
def test_corrections_follow_the_final_verdict(detector: str) -> None:
    data = make_noisy_set(16, 32, alpha=0.5, seed=6).training_data()
    g = GStageConfig(warmup_epochs=3, feedback=False, detector=detector, max_flagged_share=1.0)  # type: ignore[arg-type]
    result = fit(tiny(g=g, t=replace(tiny().t, early_learning="none")), data)
    last = result.rounds[-1]
    assert len(result.rounds) == 2 and last.n_flagged == int(result.flagged.sum()) > 0
    assert np.array_equal(result.flagged, result.clean_prob <= g.tau)
    assert sorted(result.corrected) == np.flatnonzero(result.flagged).tolist()  # the gate is off here


@pytest.mark.parametrize("fill", [True, False])
def test_the_t_stage_trains_the_epochs_an_early_g_stage_left_unused(fill: bool) -> None:
    data = make_noisy_set(16, 32, alpha=0.5, seed=6).training_data()
    # stop_change_frac 1: the feedback stops after its first round, 2 of its 3 rounds unused.
    g = GStageConfig(warmup_epochs=3, rounds_max=3, epochs_per_round=2, stop_change_frac=1.0)
    events: list[Progress] = []
    result = fit(tiny(g=g, t=replace(tiny().t, fill_schedule=fill)), data, callbacks=[events.append])
    phases = [p.phase for p in result.history]
    assert phases.count("g_round") == 2 and len(result.rounds) == 3  # round 0, round 1, the final verdict
    t_epochs = sum(p.startswith("t_") for p in phases)
    assert t_epochs == (3 + 2 * 2 if fill else 3)
    total = len(result.history)
    assert total == (3 + 3 * 2 + 3 if fill else 3 + 2 + 3)
    # Exact from the first epoch when the schedule is filled; an upper bound until the G stage ends if not.
    announced = {e.total_epochs for e in events}
    assert announced == ({total} if fill else {total, 3 + 3 * 2 + 3})


@pytest.mark.parametrize("score_net", ["ema", "student"])
def test_g_stage_scores_with_the_chosen_net(score_net: str) -> None:
    data = make_noisy_set(16, 32, alpha=0.5, seed=6).training_data()
    g = replace(tiny().g, feedback=False, score_net=score_net, detector="loss")
    config = tiny(g=g, t=replace(tiny().t, epochs=1))
    saved: list[Checkpoint] = []
    fit(config, data, checkpoint=saved.append)
    split = saved[g.warmup_epochs - 1]  # the epoch that ends with the G stage's split
    student = ModelBundle(config, LabelMap(), 3, split.nets["student"]).build()
    images = torch.as_tensor(data.images, dtype=torch.float32)
    masks = torch.as_tensor(data.masks, dtype=torch.int64)
    scores = score_samples(student, images, masks, g.sample_loss, 8)
    # The split's scores are the student's own only when it is the scorer; the EMA's differ.
    assert np.allclose(split.engine["sample_loss"].numpy(), scores, atol=1e-6) == (score_net == "student")
