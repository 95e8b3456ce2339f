"""G stage: recognise noisy samples with a GMM on per-sample losses, iterated as positive feedback.

Gao et al. 2024 (G-T correcting) split clean from noisy samples on the per-sample loss histogram; the
GMM settings follow DivideMix (Li et al., ICLR 2020, ``Train_cifar.py`` eval_train): normalised
losses, 2 components, max_iter 10, tol 1e-2, reg_covar 5e-4, fixed random_state.
Our additions keep one odd score from owning a component: the scores are scaled between two quantiles
and clipped (``g.robust_quantile``; DivideMix's plain min-max when 0), and a fit whose smaller side
holds less than ``g.min_component_weight`` of the samples, or that flags more than
``g.max_flagged_share`` of them, counts as one group (``is_bimodal``).
Shape legend: N samples, C channels, K classes, S size.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import nn

from gtcorrect.config import GStageConfig
from gtcorrect.losses import per_sample_loss
from gtcorrect.types import GmmRound

_LOG_OFFSET = 0.01


@dataclass(frozen=True)
class ScoreMixture:
    """A fitted split of per-sample scores that can also judge new scores (e.g. the calibration's).

    lo, hi: the raw scores mapped to 0 and 1 (then clipped); log_lo, log_hi: the same for the log
    transform (``g.score_transform="log"``); gmm None when the scores do not vary (everyone is clean).
    """

    lo: float
    hi: float
    log: bool
    log_lo: float
    log_hi: float
    gmm: GaussianMixture | None
    clean_component: int

    def normalise(self, scores: np.ndarray) -> np.ndarray:
        """Raw scores (M,) -> the [0, 1] values the GMM was fitted on."""
        x = np.asarray(scores, dtype=np.float64)
        span = self.hi - self.lo
        norm = np.clip((x - self.lo) / span, 0.0, 1.0) if span > 1e-12 else np.zeros_like(x)
        if self.log and span > 1e-12:
            logged = np.log(norm + _LOG_OFFSET)
            norm = np.clip((logged - self.log_lo) / (self.log_hi - self.log_lo), 0.0, 1.0)
        return norm

    def clean_prob(self, scores: np.ndarray) -> np.ndarray:
        """Posterior of the clean (lowest-mean) component for raw scores (M,)."""
        if self.gmm is None or np.size(scores) == 0:
            return np.ones(np.shape(scores), dtype=np.float64)
        return self.gmm.predict_proba(self.normalise(scores)[:, None])[:, self.clean_component]


def fit_mixture(losses: np.ndarray, cfg: GStageConfig, seed: int) -> ScoreMixture:
    """Fit the split's normalisation and GMM to per-sample losses (N,)."""
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError(f"losses must be a non-empty (N,) array, got shape {losses.shape}.")
    if not np.all(np.isfinite(losses)):
        raise ValueError(f"losses contain non-finite values: {losses[~np.isfinite(losses)][:5].tolist()}.")
    q = cfg.robust_quantile
    lo, hi = (float(v) for v in np.quantile(losses, [q, 1.0 - q]))
    if hi - lo <= 1e-12:  # the quantiles coincide: the whole range
        lo, hi = float(losses.min()), float(losses.max())
    log = cfg.score_transform == "log"
    log_lo, log_hi = float(np.log(_LOG_OFFSET)), float(np.log(1.0 + _LOG_OFFSET))
    if losses.size < 2 or hi - lo <= 1e-12:
        return ScoreMixture(lo, hi, log, log_lo, log_hi, None, 0)
    mixture = ScoreMixture(lo, hi, log, log_lo, log_hi, None, 0)
    gmm, clean = _fit_gmm_model(mixture.normalise(losses), cfg, seed)
    return ScoreMixture(lo, hi, log, log_lo, log_hi, gmm, clean)


def is_bimodal(record: GmmRound, min_separation: float, min_weight: float, max_flagged: float = 1.0) -> bool:
    """Evidence of two groups: separation S >= ``min_separation``, each side holds at least
    ``min_weight`` of the samples (by the mixture's weights and by the flags), and at most
    ``max_flagged`` of them are flagged (beyond, the clean component has collapsed onto a few masks)."""
    return not_bimodal_because(record, min_separation, min_weight, max_flagged) is None


def not_bimodal_because(
    record: GmmRound, min_separation: float, min_weight: float, max_flagged: float = 1.0
) -> str | None:
    """Why ``record`` is no evidence of two groups, in words (the first test it fails); None when it is."""
    n = max(sum(record.hist_counts), 1)
    flagged_share = record.n_flagged / n
    if record.separation < min_separation:
        return f"separation S {record.separation:.2f}, below {min_separation:.2f}"
    if min(record.weights) < min_weight:
        return f"the smaller component weighs {min(record.weights):.1%}, under {min_weight:.0%}"
    if min(flagged_share, 1.0 - flagged_share) < min_weight:
        side = "flagged" if flagged_share < 0.5 else "unflagged"
        count = record.n_flagged if flagged_share < 0.5 else n - record.n_flagged
        return f"only {count} of {n} masks would be {side}, under {min_weight:.0%}"
    if flagged_share > max_flagged:
        return (
            f"{record.n_flagged} of {n} masks ({flagged_share:.0%}) would be flagged, over "
            f"{max_flagged:.0%}: the clean component has collapsed onto a few masks"
        )
    return None


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
    mixture = fit_mixture(losses, cfg, seed)
    norm = mixture.normalise(losses)
    counts, edges = np.histogram(norm, bins=cfg.histogram_bins, range=(0.0, 1.0))
    clean_prob = mixture.clean_prob(losses)
    if mixture.gmm is None:
        means, variances, weights, separation = (0.0, 0.0), (0.0, 0.0), (1.0, 0.0), 0.0
    else:
        means, variances, weights = _summary(mixture.gmm, mixture.clean_component)
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


def _fit_gmm_model(norm: np.ndarray, cfg: GStageConfig, seed: int) -> tuple[GaussianMixture, int]:
    """Fit the GMM to normalised scores (N,); return it and its clean (lowest-mean) component.

    ``cfg.gmm_components`` < 2 picks 2, 3 or 4 components by BIC.
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
    return gmm, int(gmm.means_[:, 0].argmin())


def _summary(
    gmm: GaussianMixture, lo: int
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """(clean, noisy) means, variances and weights; with more than two components the noisy side is
    summarised by the moments of the mixture of all the other components."""
    k = int(gmm.n_components)
    mu, var, w = gmm.means_[:, 0], gmm.covariances_.reshape(k), gmm.weights_
    rest = np.arange(k) != lo
    w_rest = w[rest] / w[rest].sum()
    mu_rest = float((w_rest * mu[rest]).sum())
    var_rest = float((w_rest * (var[rest] + mu[rest] ** 2)).sum() - mu_rest**2)
    return (float(mu[lo]), mu_rest), (float(var[lo]), var_rest), (float(w[lo]), float(w[rest].sum()))


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
