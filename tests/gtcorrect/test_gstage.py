import numpy as np
import pytest
import torch

from gtcorrect.config import GStageConfig, NetConfig
from gtcorrect.gstage import (
    feedback_converged,
    fit_gmm,
    score_samples,
    trajectory_score,
    update_round_decided,
)
from gtcorrect.networks import build_network


def _bimodal(distance: float, seed: int = 0, n: int = 200, noisy_frac: float = 0.4):
    rng = np.random.default_rng(seed)
    noisy = np.zeros(n, dtype=bool)
    noisy[rng.permutation(n)[: int(noisy_frac * n)]] = True
    losses = np.where(noisy, 1.0 + distance, 1.0) + rng.normal(0, 0.15, n)
    return losses, noisy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_recovers_membership_of_bimodal_losses(seed: int) -> None:
    losses, noisy = _bimodal(1.0, seed)
    clean_prob, record = fit_gmm(losses, GStageConfig(), seed=seed)
    flagged = clean_prob <= 0.5
    assert (flagged == noisy).mean() >= 0.97
    assert record.means[0] < record.means[1]
    assert record.n_flagged == flagged.sum()
    assert sum(record.hist_counts) == losses.size and len(record.hist_edges) == 51
    assert abs(record.weights[1] - 0.4) < 0.05


def test_separation_grows_with_mode_distance() -> None:
    seps = [fit_gmm(_bimodal(d, 0)[0], GStageConfig(), seed=0)[1].separation for d in (0.6, 1.0, 2.0)]
    assert seps[0] < seps[1] < seps[2]


def test_constant_losses_flag_nothing() -> None:
    clean_prob, record = fit_gmm(np.full(10, 0.3), GStageConfig(), seed=0)
    assert np.all(clean_prob == 1.0) and record.separation == 0.0 and record.n_flagged == 0


def test_changed_count_and_round_decided() -> None:
    losses, _ = _bimodal(1.0, 0)
    clean_prob, _ = fit_gmm(losses, GStageConfig(), seed=0)
    flags = clean_prob <= 0.5
    previous = flags.copy()
    previous[:7] = ~previous[:7]
    _, record = fit_gmm(losses, GStageConfig(), seed=0, round_index=2, previous_flags=previous)
    assert record.n_changed == 7 and record.round == 2
    decided = update_round_decided(np.zeros(200, dtype=np.int64), previous, flags, 2)
    assert decided[:7].tolist() == [2] * 7 and decided[7:].sum() == 0
    assert feedback_converged(1, 200, GStageConfig()) and not feedback_converged(2, 200, GStageConfig())


def test_bad_losses_are_named() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        fit_gmm(np.array([0.1, np.nan, 0.3]), GStageConfig(), seed=0)
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        fit_gmm(np.zeros((2, 2)), GStageConfig(), seed=0)


def test_trajectory_is_the_mean_of_the_last_epochs() -> None:
    history = [np.full(3, float(v)) for v in range(6)]
    assert np.allclose(trajectory_score(history, 2), 4.5)
    with pytest.raises(ValueError, match="none"):
        trajectory_score([], 3)


def test_score_samples_is_per_image_and_leaves_train_mode() -> None:
    torch.manual_seed(0)
    net = build_network(NetConfig(channels=(4, 8), strides=(2,), num_res_units=0), 1, 2)
    images = torch.randn(5, 1, 16, 16)
    masks = (images[:, 0] > 0).long()
    scores = score_samples(net, images, masks, "ce+dice", batch_size=2)
    assert scores.shape == (5,) and net.training
    single = score_samples(net, images[3:4], masks[3:4], "ce+dice", batch_size=2)
    assert np.isclose(scores[3], single[0], atol=1e-5)


def _trimodal(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clean losses in a tight low mode; noisy ones in two modes (mild and severe corruption)."""
    rng = np.random.default_rng(seed)
    clean = rng.normal(0.05, 0.02, 60)
    mild, severe = rng.normal(0.35, 0.05, 20), rng.normal(0.9, 0.05, 20)
    return np.concatenate([clean, mild, severe]), np.repeat([False, True], [60, 40])


def test_more_components_or_log_transform_keep_mild_noise_on_the_noisy_side() -> None:
    losses, noisy = _trimodal()
    paper, _ = fit_gmm(losses, GStageConfig(score_transform="none"), seed=0)
    three, record = fit_gmm(
        losses, GStageConfig(score_transform="none", gmm_components=3, gmm_max_iter=100, gmm_tol=1e-4), seed=0
    )
    by_bic, _ = fit_gmm(
        losses, GStageConfig(score_transform="none", gmm_components=0, gmm_max_iter=100, gmm_tol=1e-4), seed=0
    )
    logged, _ = fit_gmm(losses, GStageConfig(score_transform="log"), seed=0)
    assert ((paper <= 0.5) == noisy).mean() <= 0.85  # the 2-component split cuts between the noisy modes
    for clean_prob in (three, by_bic, logged):
        assert ((clean_prob <= 0.5) == noisy).mean() >= 0.97
    assert record.weights[0] == pytest.approx(0.6, abs=0.05) and record.means[1] > record.means[0]
