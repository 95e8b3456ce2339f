"""G stage: recognise noisy samples with a GMM on per-sample losses, iterated as positive feedback.

Gao et al. 2024 (G-T correcting) split clean from noisy samples on the per-sample loss histogram; the
GMM settings follow DivideMix (Li et al., ICLR 2020, ``Train_cifar.py`` eval_train): min-max normalised
losses, 2 components, max_iter 10, tol 1e-2, reg_covar 5e-4, fixed random_state.
Shape legend: N samples, C channels, K classes, S size.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import nn

from gtcorrect.config import GStageConfig
from gtcorrect.losses import per_sample_loss
from gtcorrect.types import GmmRound


def fit_gmm(
    losses: np.ndarray,
    cfg: GStageConfig,
    seed: int,
    *,
    round_index: int = 0,
    previous_flags: np.ndarray | None = None,
) -> tuple[np.ndarray, GmmRound]:
    """Split per-sample losses (N,) into clean/noisy; return clean_prob (N,) and the ``GmmRound``.

    clean_prob is the posterior of the low-mean component. Degenerate inputs (fewer than 2 samples or
    all losses equal) give clean_prob 1 for everyone and separation 0. ``previous_flags`` (N,) bool is
    the previous round's noisy flags, used for ``n_changed``.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError(f"losses must be a non-empty (N,) array, got shape {losses.shape}.")
    if not np.all(np.isfinite(losses)):
        raise ValueError(f"losses contain non-finite values: {losses[~np.isfinite(losses)][:5].tolist()}.")
    span = float(losses.max() - losses.min())
    norm = (losses - losses.min()) / span if span > 1e-12 else np.zeros_like(losses)
    if cfg.score_transform == "log" and span > 1e-12:
        logged = np.log(norm + 0.01)
        norm = (logged - logged.min()) / (logged.max() - logged.min())
    counts, edges = np.histogram(norm, bins=cfg.histogram_bins, range=(0.0, 1.0))
    if losses.size < 2 or span <= 1e-12:
        clean_prob = np.ones_like(losses)
        means, variances, weights, separation = (0.0, 0.0), (0.0, 0.0), (1.0, 0.0), 0.0
    else:
        clean_prob, means, variances, weights = _mixture(norm, cfg, seed)
        separation = float((means[1] - means[0]) / np.sqrt(variances[0] + variances[1]))
    flags = clean_prob <= cfg.tau
    n_changed = int((flags != previous_flags).sum()) if previous_flags is not None else int(flags.sum())
    record = GmmRound(
        round=round_index,
        means=means,
        variances=variances,
        weights=weights,
        separation=separation,
        hist_counts=tuple(int(c) for c in counts),
        hist_edges=tuple(float(e) for e in edges),
        n_flagged=int(flags.sum()),
        n_changed=n_changed,
    )
    return clean_prob, record


def _mixture(
    norm: np.ndarray, cfg: GStageConfig, seed: int
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float], tuple[float, float]]:
    """Fit the GMM to normalised scores (N,); clean = the lowest-mean component.

    ``cfg.gmm_components`` < 2 picks 2, 3 or 4 components by BIC.
    Returns clean_prob (N,) and (clean, noisy) means, variances and weights; with more than two
    components the noisy side is summarised by the moments of the mixture of all the other components.
    """
    x = norm[:, None]
    candidates = [cfg.gmm_components] if cfg.gmm_components >= 2 else [2, 3, 4]
    fits = []
    for n_components in candidates:
        gmm = GaussianMixture(
            n_components=min(n_components, norm.size),
            max_iter=cfg.gmm_max_iter,
            tol=cfg.gmm_tol,
            reg_covar=cfg.gmm_reg_covar,
            random_state=seed,
        )
        with warnings.catch_warnings():
            # DivideMix's max_iter 10 / tol 1e-2 often stop before convergence, by design.
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(gmm.fit(x))
    gmm = min(fits, key=lambda g: float(g.bic(x)))
    k = int(gmm.n_components)
    mu, var, w = gmm.means_[:, 0], gmm.covariances_.reshape(k), gmm.weights_
    lo = int(mu.argmin())
    rest = np.arange(k) != lo
    w_rest = w[rest] / w[rest].sum()
    mu_rest = float((w_rest * mu[rest]).sum())
    var_rest = float((w_rest * (var[rest] + mu[rest] ** 2)).sum() - mu_rest**2)
    clean_prob = gmm.predict_proba(norm[:, None])[:, lo]
    return (
        clean_prob,
        (float(mu[lo]), mu_rest),
        (float(var[lo]), var_rest),
        (float(w[lo]), float(w[rest].sum())),
    )


def update_round_decided(
    round_decided: np.ndarray, previous_flags: np.ndarray, flags: np.ndarray, round_index: int
) -> np.ndarray:
    """Round in which each sample last changed side (N,) int: it was decided there and stayed."""
    out = round_decided.copy()
    out[previous_flags != flags] = round_index
    return out


def feedback_converged(n_changed: int, n: int, cfg: GStageConfig) -> bool:
    """Positive feedback stops when fewer than ``stop_change_frac`` of the images changed side."""
    return n_changed < cfg.stop_change_frac * n


def trajectory_score(history: list[np.ndarray], epochs: int) -> np.ndarray:
    """Mean of the last ``epochs`` per-epoch "ce+dice" scores (each (N,)): a loss trajectory.

    Averaging over epochs cancels the epoch-to-epoch jitter of single scores and rewards samples that
    stay hard to fit, which is what a wrong mask does while a clean one is learned and drops.
    """
    if not history:
        raise ValueError("trajectory score needs at least one scored epoch, got none.")
    return np.mean(np.stack(history[-max(1, epochs) :]), axis=0)


@torch.no_grad()
def score_samples(
    net: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    kind: str,
    batch_size: int,
    *,
    floor: float = 0.8,
) -> np.ndarray:
    """Per-sample score (N,) in eval mode without augmentation; images (N, C, S, S), masks (N, S, S).

    ``kind`` is a ``gtcorrect.losses.per_sample_loss`` kind ("trajectory" callers score "ce+dice").
    """
    was_training = net.training
    net.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        logits = net(images[start : start + batch_size])
        out.append(per_sample_loss(logits, masks[start : start + batch_size], kind, floor=floor))
    net.train(was_training)
    return torch.cat(out).double().cpu().numpy()
