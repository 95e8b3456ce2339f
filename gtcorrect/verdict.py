"""One verdict: the evidence about every mask (``gtcorrect.evidence``) becomes a calibrated probability
that the mask is wrong, and the threshold is applied here, once (``flag``).

The job's own data trains the verdict. Logistic detectors learn to tell corrupted copies of a pool of
the job's masks (``gtcorrect.selftest``: known to be wrong) from the given masks, one detector per family
of copies (dilated, eroded, moved, coarse polygon): positive-unlabelled learning, since some given masks
are wrong too (Elkan and Noto, KDD 2008). A mask's highest log-odds over the families (``score``) ranks
it; cross-fitting by pool image keeps the pool's own scores and the copies' out of sample. The
scores of the given masks are then a mixture of right and wrong ones: a two-Gaussian mixture whose
"wrong" component is anchored by the copies' scores (they enter its fit with a fixed total weight) finds
the share of wrong masks and each mask's posterior. On clean data the given masks score like none of
the copies and the wrong share falls near zero; a split without two groups cannot take half of the masks
(the failure of a plain GMM on one skewed mode). Robinson et al. (MICCAI 2018) and Penquitt et al. (2025)
judge segmentations the same way, with a quality model trained on corrupted masks of known quality.

``decide_by_loss`` keeps the paper's G stage (a GMM on one per-sample loss, DivideMix's settings) as the
reference configuration (``g.detector="loss"``); a fit there that shows no two groups flags the masks
with the highest loss, as many as its estimated share (clipped to the guards), instead of none.
Shape legend: N masks judged, P pool masks, Q copies, F detector features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, expit

from gtcorrect.config import GStageConfig
from gtcorrect.evidence import EvidenceTable
from gtcorrect.gstage import fit_gmm, is_bimodal
from gtcorrect.selftest import Copies
from gtcorrect.types import GmmRound

_GRID = (np.arange(4000) + 0.5) / 4000  # the squashed scale without its ends: the posterior made monotone
COPY_WEIGHT = 0.03  # the copies' total weight in the mixture's "wrong" component, per given mask
FOLDS = 5
OWN_FAMILY = 0.5  # a family's detector: the share of the copies' weight on that family's copies
# A component's variance floor is at most this share of the most a beta of its mean can have: (wrong,
# right). The right masks' own spread is left nearly free (``_beta_of``).
FLOOR_SHARE = (0.1, 0.01)


def flag(noise_prob: np.ndarray, g: GStageConfig) -> np.ndarray:
    """The one threshold: a mask is flagged when its clean probability is at most ``g.tau``."""
    return np.asarray(1.0 - np.asarray(noise_prob) <= g.tau)


def features(table: EvidenceTable, coarse_reference: float, multiclass: bool) -> tuple[np.ndarray, list[str]]:
    """(M, F) detector features of a table and their names, each oriented so that more means more likely
    wrong: the network's disagreement, the outline's poor alignment with the image's edges (its negative),
    a coarser outline (negative coarseness), an outline coarser or finer than this data's masks (distance
    from ``coarse_reference``, their median), and an area or outline offset far from the prediction's
    either way. "net.worst_class" only with several foreground classes."""
    cols = [table["net.excess"], table["net.disagreement"]]
    names = ["net.excess", "net.disagreement"]
    if multiclass:
        cols.append(table["net.worst_class"])
        names.append("net.worst_class")
    cols += [-table["edge.alignment"], -table["shape.coarseness"]]
    names += ["edge.alignment (low)", "shape.coarseness (coarse)"]
    cols.append(np.abs(table["shape.coarseness"] - coarse_reference))
    names.append("shape.coarseness (atypical)")
    for n in ("shape.area", "shape.offset"):
        cols.append(np.abs(table[n]))
        names.append(f"{n} (either way)")
    return np.stack(cols, 1).astype(np.float64), names


@dataclass(frozen=True)
class Detector:
    """Standardised logistic regression over ``names``; NaN features take ``fill`` (the training median)."""

    names: tuple[str, ...]
    fill: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def standardise(self, x: np.ndarray) -> np.ndarray:
        x = np.where(np.isfinite(x), x, self.fill)
        return (x - self.center) / self.scale

    def score(self, x: np.ndarray) -> np.ndarray:
        """(M,) log-odds that each row is a corrupted copy rather than a given mask."""
        return np.asarray(self.standardise(x) @ self.coef + self.intercept)

    def decided_by(self, x: np.ndarray, reference: np.ndarray) -> list[str]:
        """Per row, the feature that raises its score most above the ``reference`` rows' mean."""
        contrib = (self.standardise(x) - self.standardise(reference).mean(0)) * self.coef
        return [self.names[j] for j in contrib.argmax(1)]


def train_detector(
    x0: np.ndarray,
    x1: np.ndarray,
    names: Sequence[str],
    c: float = 1.0,
    copy_weight: np.ndarray | None = None,
) -> Detector:
    """Given masks x0 (P, F) against copies x1 (Q, F), classes weighted equally (within the copies by
    ``copy_weight`` (Q,), default equal): logistic regression on standardised features with an L2
    penalty 1 / (2 c) and every weight at least 0. Each feature is oriented so that more is more wrong
    (``features``); a negative weight would let a mask far beyond any copy (a box drawn away from the
    object, offset by 50 px) look right because of the very evidence that makes it wrong."""
    x = np.concatenate([x0, x1])
    fill = np.nanmedian(x, 0)
    fill = np.where(np.isfinite(fill), fill, 0.0)
    x = np.where(np.isfinite(x), x, fill)
    center, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - center) / scale
    y = np.r_[np.zeros(len(x0)), np.ones(len(x1))]
    w1 = np.ones(len(x1)) if copy_weight is None else np.asarray(copy_weight, dtype=np.float64)
    sample = np.r_[np.full(len(x0), 0.5 / max(len(x0), 1)), 0.5 * w1 / max(float(w1.sum()), 1e-12)]
    sign = 2.0 * y - 1.0

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        margin = sign * (z @ w + b)
        value = float((sample * np.logaddexp(0.0, -margin)).sum() + 0.5 / c * (w @ w) / len(y))
        d = -sample * sign * expit(-margin)
        grad = np.r_[z.T @ d + w / c / len(y), d.sum()]
        return value, grad

    bounds = [(0.0, None)] * z.shape[1] + [(None, None)]
    fitted = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    return Detector(tuple(names), fill, center, scale, fitted.x[:-1].copy(), float(fitted.x[-1]))


@dataclass(frozen=True)
class Detectors:
    """One ``Detector`` per kind of copy (family); a mask's score is the highest of their log-odds. The
    wrong masks are a union of kinds (a coarse polygon, a dilation, an outline moved away), each wrong
    along its own evidence; one linear detector over all of them learns their average direction and
    misses a mask that is extreme along one kind's evidence only (a box drawn on empty tissue: as coarse
    as a mask can be, weighted near 0 by a detector that also had to separate the dilations). Each
    family's detector still learns from every copy, its own family carrying ``OWN_FAMILY`` of their
    weight: detectors of one family alone, each from a quarter of the copies, scored the right masks
    less steadily, and the job flagged more of them (Kvasir-SEG, BENCHMARKS.md)."""

    families: tuple[str, ...]
    members: tuple[Detector, ...]

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(M, families) each family's log-odds."""
        return np.stack([d.score(x) for d in self.members], 1)

    def score(self, x: np.ndarray) -> np.ndarray:
        """(M,) the highest family log-odds of each row."""
        return np.asarray(self.scores(x).max(1))

    def decided_by(self, x: np.ndarray, reference: np.ndarray) -> list[str]:
        """Per row, the family whose detector scores it highest and that detector's feature that raises the
        score most above the ``reference`` rows' mean: "<feature>; like the <family> copies"."""
        best = self.scores(x).argmax(1)
        by = [d.decided_by(x, reference) for d in self.members]
        return [f"{by[f][i]}; like the {self.families[f]} copies" for i, f in enumerate(best)]


def train_detectors(x0: np.ndarray, x1: np.ndarray, family: np.ndarray, names: Sequence[str]) -> Detectors:
    """Given masks x0 (P, F) against the copies x1 (Q, F), one detector per family (``family`` (Q,)), each
    with ``OWN_FAMILY`` of the copies' weight on its own family's copies."""
    kinds = tuple(dict.fromkeys(str(f) for f in family))
    members = []
    for kind in kinds:
        own = (family == kind).astype(np.float64)
        weight = OWN_FAMILY * own / own.sum() + (1.0 - OWN_FAMILY) / family.size
        members.append(train_detector(x0, x1, names, copy_weight=weight))
    return Detectors(kinds, tuple(members))


def cross_fitted(
    x0: np.ndarray, x1: np.ndarray, source: np.ndarray, family: np.ndarray, names: Sequence[str], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold scores of the pool masks x0 (P, F) and of the copies x1 (Q, F): each pool image, its
    given mask and its copies, is scored by detectors trained without it (``FOLDS`` folds)."""
    p = len(x0)
    fold = np.random.default_rng([seed, 271]).permutation(p) % min(FOLDS, max(p, 1))
    s0, s1 = np.zeros(p), np.zeros(len(x1))
    for f in np.unique(fold):
        out0, out1 = fold == f, fold[source] == f
        # One fold (a single pool mask) leaves nothing to train on: score in-sample.
        train0, train1 = (slice(None), slice(None)) if out0.all() else (~out0, ~out1)
        det = train_detectors(x0[train0], x1[train1], family[train1], names)
        s0[out0], s1[out1] = det.score(x0[out0]), det.score(x1[out1])
    return s0, s1


_EDGE = 1e-4  # scores are squashed into [_EDGE, 1 - _EDGE]


def squash(scores: np.ndarray) -> np.ndarray:
    """Detector scores (log-odds) as probabilities in (0, 1), where the mixture is fitted."""
    return np.clip(expit(np.asarray(scores, dtype=np.float64)), _EDGE, 1.0 - _EDGE)


def _beta_log(u: np.ndarray, ab: tuple[float, float]) -> np.ndarray:
    a, b = ab
    return np.asarray((a - 1.0) * np.log(u) + (b - 1.0) * np.log1p(-u) - betaln(a, b))


def _beta_of(w: np.ndarray, u: np.ndarray, floor: float, wrong: bool) -> tuple[float, float]:
    """Beta parameters with the weighted mean and variance of u (method of moments); the variance is kept
    between ``floor`` and what a beta of that mean can have without a pole at the other side's end: the
    wrong masks' beta none at 0 (a >= 1), the right masks' none at 1 (b >= 1). Without that bound a wide
    wrong component turns U-shaped and claims the most clearly right masks, at the bottom end. The floor
    is at most ``FLOOR_SHARE`` of the most a beta of that mean can have: right masks that all score far
    below the copies (mean 0.001 on the squashed scale) cannot spread as wide as the copies do, and a
    floor above their reach turned their beta into a spike at 0 while the wrong one took every mask."""
    m = float(np.clip((w * u).sum() / w.sum(), _EDGE, 1.0 - _EDGE))
    v = float((w * (u - m) ** 2).sum() / w.sum())
    no_pole = m * m * (1.0 - m) / (1.0 + m) if wrong else m * (1.0 - m) ** 2 / (2.0 - m)
    reach = m * (1.0 - m)  # the most a beta of mean m can have
    v = min(max(v, min(floor, FLOOR_SHARE[0 if wrong else 1] * reach)), 0.999 * reach, no_pole)
    k = m * (1.0 - m) / v - 1.0
    return max(m * k, 1e-3), max((1.0 - m) * k, 1e-3)


@dataclass(frozen=True)
class Mixture:
    """Two beta distributions over the squashed detector scores: right masks and wrong ones, ``weight``
    the wrong share. A beta mixture rather than Gaussians (Arazo et al., ICML 2019, on per-sample losses):
    the right masks' scores are skewed, with a long tail of easy masks, that a Gaussian would cover with a
    spread wide enough to swallow the wrong masks too."""

    weight: float
    right: tuple[float, float]  # beta (a, b)
    wrong: tuple[float, float]

    def noise_prob(self, x: np.ndarray) -> np.ndarray:
        """Posterior of the wrong component for scores (M,), made never to fall as the score rises. A beta
        can own both ends of (0, 1): the right masks' beta the top end, or the wrong masks' beta, with a
        pole at 0, the bottom end, where the most clearly right masks are. So above the right masks' mean
        score a higher score never lowers the posterior (running maximum from that mean up), and below it
        a lower score never raises it (running minimum from that mean down), on a fine grid of the
        squashed scale; where the posterior rises already, it is kept as it is."""
        u = squash(np.asarray(x, dtype=np.float64))
        p, on_grid = self._posterior(u), self._posterior(_GRID)
        k = int(np.searchsorted(_GRID, self.moments()[0][0]))
        rising = np.maximum.accumulate(on_grid[k:])  # rising[j]: the highest from grid k to k + j
        falling = np.minimum.accumulate(on_grid[: k + 1][::-1])[::-1]  # falling[i]: the lowest from i to k
        at = np.searchsorted(_GRID, u)  # the first grid point at or above each score
        above = at > k
        out = np.minimum(p, falling[np.minimum(at, k)])
        out[above] = np.maximum(p[above], rising[at[above] - 1 - k])
        return out

    def _posterior(self, u: np.ndarray) -> np.ndarray:
        w = float(np.clip(self.weight, 1e-12, 1.0 - 1e-12))
        log1 = np.log(w) + _beta_log(u, self.wrong)
        log0 = np.log(1.0 - w) + _beta_log(u, self.right)
        return np.asarray(expit(log1 - log0))

    def moments(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(right, wrong) means and (right, wrong) variances on the squashed scale."""
        (a0, b0), (a1, b1) = self.right, self.wrong
        means = (a0 / (a0 + b0), a1 / (a1 + b1))
        variances = (
            a0 * b0 / ((a0 + b0) ** 2 * (a0 + b0 + 1.0)),
            a1 * b1 / ((a1 + b1) ** 2 * (a1 + b1 + 1.0)),
        )
        return means, variances

    @property
    def separation(self) -> float:
        (m0, m1), (v0, v1) = self.moments()
        return float((m1 - m0) / np.sqrt(v0 + v1))


def fit_mixture(
    scores: np.ndarray, anchors: np.ndarray, iters: int = 200, copy_weight: float = COPY_WEIGHT
) -> Mixture:
    """EM over the given masks' scores (N,) with the copies' scores (Q,) as known members of the wrong
    component, weighing ``copy_weight`` x N together; the wrong share comes from the given masks alone.
    EM starts from three splits of the scores; the fit with the highest likelihood, the copies' included,
    is kept. N masks cannot tell a wrong share below half a mask: the share is kept at least that, so that
    every mask keeps a probability of its own (a ranking) rather than all of them 0."""
    u, c = squash(scores), squash(anchors)
    # A component much narrower than a group of wrong masks (the copies) would sit on a few masks (the
    # collapse of a plain mixture onto the easiest ones): its spread is floored at a quarter of theirs,
    # or lower where a beta of its mean cannot be that wide (``_beta_of``).
    floor = max((0.25 * float(np.std(c))) ** 2, 1e-8)
    cw = np.full(c.size, copy_weight * u.size / max(c.size, 1))
    cuts = (float(np.quantile(u, 0.75)), float(np.median(u)), float(np.mean(c)))
    fits = [_em(u, c, cw, cut, floor, iters) for cut in cuts]
    best = max(fits, key=lambda f: f[1])[0]
    half = 0.5 / max(u.size, 1)
    return replace(best, weight=float(np.clip(best.weight, half, 1.0 - half)))


def _em(
    u: np.ndarray, c: np.ndarray, cw: np.ndarray, cut: float, floor: float, iters: int
) -> tuple[Mixture, float]:
    """One EM run from the split of u at ``cut``; returns the mixture and its log-likelihood."""
    r = np.where(u > cut, 0.9, 0.1)
    mixture = Mixture(0.5, (1.0, 1.0), (1.0, 1.0))
    for _ in range(iters):
        wrong = _beta_of(np.r_[r, cw], np.r_[u, c], floor, wrong=True)
        right = _beta_of(np.maximum(1.0 - r, 1e-12), u, floor, wrong=False)
        mixture = Mixture(float(r.mean()), right, wrong)
        new = mixture._posterior(u)
        done = float(np.abs(new - r).max()) < 1e-7
        r = new
        if done:
            break
    (m0, m1), _ = mixture.moments()
    if m1 < m0:  # the "wrong" component must be the one with the higher scores
        mixture = Mixture(1.0 - mixture.weight, mixture.wrong, mixture.right)
    w = float(np.clip(mixture.weight, 1e-12, 1.0 - 1e-12))
    log1, log0 = np.log(w) + _beta_log(u, mixture.wrong), np.log(1.0 - w) + _beta_log(u, mixture.right)
    loglik = float(np.logaddexp(log0, log1).sum() + (cw * _beta_log(c, mixture.wrong)).sum())
    return mixture, loglik


@dataclass(frozen=True)
class Judge:
    """The fitted detector and mixture: judges more masks of the same job (held-back ones)."""

    detector: Detectors
    mixture: Mixture
    coarse_reference: float
    multiclass: bool

    def features(self, table: EvidenceTable) -> np.ndarray:
        return features(table, self.coarse_reference, self.multiclass)[0]

    def judge(self, table: EvidenceTable) -> tuple[np.ndarray, np.ndarray]:
        """(scores, noise probabilities) of the masks of ``table``."""
        scores = self.detector.score(self.features(table))
        return scores, self.mixture.noise_prob(scores)


@dataclass
class Verdict:
    """The verdict on N masks: the ranking (``score``), the probability that each is wrong, the flags,
    the evidence that decided, the estimated wrong share, and the split as a ``GmmRound`` record."""

    score: np.ndarray
    noise_prob: np.ndarray
    flagged: np.ndarray
    decided_by: list[str]
    rate: float
    record: GmmRound
    judge: Judge | None = None
    copy_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (Q,) cross-fitted
    # The detector's inputs, for the self-test's transfer check: features (N, F), the pool (P,) and the
    # copies' features (Q, F).
    x: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    pool: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    x_copies: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    names: tuple[str, ...] = ()


def _record(
    scores: np.ndarray,
    mixture: Mixture,
    flags: np.ndarray,
    g: GStageConfig,
    rnd: int,
    previous: np.ndarray | None,
) -> GmmRound:
    counts, edges = np.histogram(squash(scores), bins=g.histogram_bins, range=(0.0, 1.0))
    means, variances = mixture.moments()
    return GmmRound(
        round=rnd,
        means=means,
        variances=variances,
        weights=(1.0 - mixture.weight, mixture.weight),
        separation=mixture.separation,
        hist_counts=tuple(int(c) for c in counts),
        hist_edges=tuple(float(e) for e in edges),
        n_flagged=int(flags.sum()),
        n_changed=int((flags != previous).sum()) if previous is not None else int(flags.sum()),
        score="detector score, squashed to (0, 1)",
        distribution="beta",
    )


def decide(
    table: EvidenceTable,
    pool: np.ndarray,
    copies: Copies,
    copy_table: EvidenceTable,
    g: GStageConfig,
    seed: int,
    round_index: int,
    previous: np.ndarray | None = None,
) -> Verdict:
    """The learned verdict on the N masks of ``table``; ``pool`` indexes the masks the copies were made
    from (``copies.source`` indexes ``pool``)."""
    reference = (
        float(np.nanmedian(table["shape.coarseness"]))
        if np.isfinite(table["shape.coarseness"]).any()
        else 0.0
    )
    multiclass = bool(np.isfinite(table.per_class).any(0).sum() > 1)
    x, names = features(table, reference, multiclass)
    xc = features(copy_table, reference, multiclass)[0]
    detector = train_detectors(x[pool], xc, copies.family, names)
    pool_scores, copy_scores = cross_fitted(x[pool], xc, copies.source, copies.family, names, seed)
    scores = detector.score(x)
    scores[pool] = pool_scores
    mixture = fit_mixture(scores, copy_scores)
    noise = mixture.noise_prob(scores)
    flags = flag(noise, g)
    return Verdict(
        score=scores,
        noise_prob=noise,
        flagged=flags,
        decided_by=detector.decided_by(x, x[pool]),
        rate=mixture.weight,
        record=_record(scores, mixture, flags, g, round_index, previous),
        judge=Judge(detector, mixture, reference, multiclass),
        copy_scores=copy_scores,
        x=x,
        pool=np.asarray(pool),
        x_copies=xc,
        names=tuple(names),
    )


def transfer_recall(verdict: Verdict, family: np.ndarray, g: GStageConfig) -> dict[str, float]:
    """Per copy family: the share of its copies flagged by a detector and mixture that learnt from the
    other families only (how the verdict does on a kind of error it has not seen). Empty with fewer than
    two families."""
    kinds = list(dict.fromkeys(family.tolist()))
    if len(kinds) < 2 or verdict.x.size == 0:
        return {}
    out = {}
    for kind in kinds:
        seen = family != kind
        x0, x1 = verdict.x[verdict.pool], verdict.x_copies[seen]
        detector = train_detectors(x0, x1, family[seen], verdict.names)
        mixture = fit_mixture(detector.score(verdict.x), detector.score(verdict.x_copies[seen]))
        out[str(kind)] = float(flag(mixture.noise_prob(detector.score(verdict.x_copies[~seen])), g).mean())
    return out


def copy_recall(verdict: Verdict, family: np.ndarray, g: GStageConfig) -> tuple[float, dict[str, float]]:
    """The share of the self-test's copies the verdict flags (their cross-fitted scores), overall and per
    family."""
    if verdict.judge is None or verdict.copy_scores.size == 0:
        return 0.0, {}
    caught = flag(verdict.judge.mixture.noise_prob(verdict.copy_scores), g)
    return float(caught.mean()), {
        str(f): float(caught[family == f].mean()) for f in dict.fromkeys(family.tolist())
    }


def rate_interval(verdict: Verdict, extra: np.ndarray, bootstrap: int, seed: int) -> tuple[float, float]:
    """95 % bootstrap interval of the mean probability of being wrong over the N judged masks and the
    ``extra`` scores (held-back masks): resampled masks, the mixture refitted on each resample."""
    if verdict.judge is None:
        return verdict.rate, verdict.rate
    scores = np.r_[verdict.score, extra]
    rng = np.random.default_rng([seed, 104729])
    rates = []
    for _ in range(max(bootstrap, 1)):
        sample = scores[rng.integers(0, scores.size, scores.size)]
        rates.append(float(fit_mixture(sample, verdict.copy_scores, iters=50).noise_prob(sample).mean()))
    lo, hi = np.quantile(rates, [0.025, 0.975])
    return float(lo), float(hi)


def decide_by_loss(
    losses: np.ndarray, g: GStageConfig, seed: int, round_index: int, previous: np.ndarray | None = None
) -> Verdict:
    """The paper's split: a GMM on per-sample losses (``gtcorrect.gstage.fit_gmm``). A fit that fails
    the guards (``g.min_component_weight``, ``g.max_flagged_share``) flags the masks with the highest
    loss instead, as many as its noisy weight says, clipped to the guards: the same rule whichever
    guard failed."""
    clean_prob, record = fit_gmm(losses, g, seed, round_index=round_index, previous_flags=previous)
    noise = 1.0 - clean_prob
    flags = flag(noise, g)
    if not is_bimodal(record, 0.0, g.min_component_weight, g.max_flagged_share):
        share = float(np.clip(record.weights[1], g.min_component_weight, g.max_flagged_share))
        k = int(round(share * losses.size)) if record.separation > 0 else 0
        flags = np.zeros(losses.size, dtype=bool)
        flags[np.argsort(-losses, kind="stable")[:k]] = True
        changed = int((flags != previous).sum()) if previous is not None else int(flags.sum())
        record = GmmRound(
            **{**record.__dict__, "n_flagged": int(flags.sum()), "n_changed": changed, "applied": False}
        )
    return Verdict(
        score=np.asarray(losses, dtype=np.float64),
        noise_prob=noise,
        flagged=flags,
        decided_by=["loss"] * losses.size,
        rate=float(flags.mean()),
        record=record,
    )


def match_quantiles(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each score (M,) replaced by the ``reference`` score (N,) at its own rank's quantile: the order of
    ``scores`` kept, their distribution that of ``reference`` (two random halves of one set of masks
    judged by networks that did and did not train on them)."""
    if scores.size == 0:
        return np.asarray(scores, dtype=np.float64)
    quantile = (np.argsort(np.argsort(scores, kind="stable"), kind="stable") + 0.5) / scores.size
    return np.asarray(np.quantile(reference, quantile))
