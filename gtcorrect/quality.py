"""A finished run judges itself: validation on held-back samples, evidence of noise, a self-test on
corrupted copies of trusted masks, and the gate that decides whether corrected masks are proposed.

Why: a G-T run always produces a split and corrections, also where its evidence does not hold (clean
data, a weak network, a biased annotator whose bias the network learnt). The noise report is only
worth what the user can check, so every run reports, from its own data:
- ``validation``: Dice of the kept network on samples held back from training (``quality.val_fraction``),
  against their *given* masks: a lower bound of the true Dice when masks are noisy;
- ``noise_evidence``: whether the split that stands shows two groups (``gtcorrect.gstage.is_bimodal``
  with ``quality.min_separation``); without it nothing is flagged and the scores are only a ranking;
- ``estimated_noise_rate`` and a bootstrap interval (resampled masks, refitted mixture);
- ``calibration``: the self-test (``gtcorrect.selftest``): the most trusted masks are corrupted with the
  engine's own simulator (known truth), scored by the kept network and judged by the run's own split:
  the detector's recall (and precision against the uncorrupted originals) and whether confident
  correcting brings the copies back (BENCHMARKS.md measures how far it is from the truth);
- the **correction gate**: corrections are proposed only when the job has evidence of noise, enough
  samples, a network above ``quality.min_val_dice``, a mixture that estimates at most
  ``quality.max_false_flag_rate`` clean masks among the flagged, and a self-test in which correcting
  raised the copies' Dice. Per mask, a correction is proposed only where its expected gain is positive:
  with q = 1 - clean probability and beta the share of a correction's change that the self-test saw
  come back as Dice gain, q * beta > 1 - q, and q >= ``quality.min_noise_prob`` (the mixture's posterior
  is overconfident, BENCHMARKS.md).
Shape legend: N training images of the run, M held-back or calibration masks, K classes, S size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from gtcorrect.boundary import JointMixture, edge_alignment, fit_joint, low_alignment_auroc
from gtcorrect.config import TrainConfig
from gtcorrect.gstage import ScoreMixture, fit_gmm, fit_mixture, is_bimodal, not_bimodal_because
from gtcorrect.selftest import Calibration, Fetch, matched_self_test, trusted_indices
from gtcorrect.types import GmmRound, json_safe

CORRECTIONS_APPLIED, CORRECTIONS_WITHHELD, CORRECTIONS_NONE = "applied", "withheld", "none"


@dataclass(frozen=True)
class Warning:
    """A machine-readable code and one sentence for a person."""

    code: str
    message: str


@dataclass(frozen=True)
class BoundaryCheck:
    """Image-edge evidence (``gtcorrect.boundary``): a second opinion that does not come from the network.

    Used when the self-test shows that the outlines' edge alignment tells corrupted copies from their
    originals (``edge_auroc`` >= ``quality.min_edge_auroc``) and a joint mixture over the network's
    score and the alignment finds two groups that agree (the noisy one fits worse and follows the edges
    less). Then the joint posterior is the final clean probability, and a correction is proposed only
    where its outline follows the image's edges better than the given mask's (``vetoed`` counts the
    others)."""

    edge_auroc: float | None
    used: bool
    reason: str
    # How much less the network's flagged masks follow the edges than its unflagged ones (AUROC); below
    # ``quality.min_edge_confirmation`` the edges refute the split (``refutes``): no evidence of noise.
    confirmation: float | None = None
    refutes: bool = False
    noisy_weight: float | None = None  # the joint mixture's noisy component weight
    vetoed: int = 0


@dataclass(frozen=True)
class Quality:
    """What a run says about its own verdicts; ``to_dict`` is the job's ``quality`` JSON."""

    n_samples: int
    n_held_out: int
    validation_dice: float | None
    noise_evidence: bool | None  # None: the method makes no split
    separation: float | None  # of the split that stands
    estimated_noise_rate: float | None
    noise_rate_interval: tuple[float, float] | None
    false_flag_rate: float | None  # the mixture's mean clean probability over the flagged masks
    calibration: Calibration | None
    corrections: str  # "applied", "withheld" or "none" (the method corrects nothing)
    corrections_reason: str
    n_proposed: int
    warnings: list[Warning] = field(default_factory=list)
    validation_source: str | None = None  # "held_out" or "supplied" (the caller's validation images)
    boundary: BoundaryCheck | None = None
    # The annotator check (gtcorrect.bias): per suspect annotator, the shift and how many of their masks
    # were flagged, given a moved outline (proposed) or vetoed by the edges. None: no check was made.
    annotator_bias: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["validation"] = (
            None
            if self.validation_dice is None
            else {
                "dice": self.validation_dice,
                "n": self.n_held_out,
                "source": self.validation_source,
                "note": "against the given masks of held-back samples: a lower bound when masks are noisy"
                if self.validation_source == "held_out"
                else "against the validation masks supplied with the data",
            }
        )
        del out["validation_dice"], out["validation_source"]
        out["corrections"] = {
            "status": self.corrections,
            "reason": self.corrections_reason,
            "proposed": self.n_proposed,
        }
        del out["corrections_reason"], out["n_proposed"]
        return dict(json_safe(out))


@dataclass
class Verdict:
    """The run's final per-mask verdicts after the assessment (N training images)."""

    clean_prob: np.ndarray  # (N,)
    flagged: np.ndarray  # (N,) bool; all False without evidence of noise
    proposed: np.ndarray  # (N,) bool: flagged and given a correction by the gate


def holdout_indices(n: int, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-back) sample indices, sorted; nothing is held back when the share is too small to
    validate on (``quality.min_val_samples``) or would leave fewer images than one batch."""
    q = config.quality
    n_held = int(round(q.val_fraction * n))
    if n_held < max(q.min_val_samples, 1) or n - n_held < max(config.batch_size, 2):
        return np.arange(n), np.zeros(0, dtype=np.int64)
    order = np.random.default_rng([config.seed, 7919]).permutation(n)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def standing_split(rounds: list[GmmRound]) -> GmmRound | None:
    """The last fit that was applied: the split whose flags stand."""
    applied = [r for r in rounds if r.applied]
    return applied[-1] if applied else None


def noise_rate_interval(
    rate_of: Callable[[np.ndarray], float], n: int, bootstrap: int, seed: int
) -> tuple[float, float]:
    """95 % bootstrap interval of the flagged share: ``rate_of`` refits the split on a resample of the
    n training masks (indices) and gives its flagged share."""
    rng = np.random.default_rng([seed, 104729])
    rates = [rate_of(rng.integers(0, n, n)) for _ in range(max(bootstrap, 1))]
    lo, hi = np.quantile(rates, [0.025, 0.975])
    return float(lo), float(hi)


def _network_rate(scores: np.ndarray, config: TrainConfig, seed: int) -> Callable[[np.ndarray], float]:
    """The flagged share of the network-score split refitted on a resample; 0 without two groups."""
    g, q = config.g, config.quality

    def rate(sample: np.ndarray) -> float:
        _, record = fit_gmm(scores[sample], g, seed)
        bimodal = is_bimodal(record, q.min_separation, g.min_component_weight, g.max_flagged_share)
        return record.n_flagged / sample.size if bimodal else 0.0

    return rate


@dataclass
class Evidence:
    """What the assessment reads from a finished run (N training images)."""

    config: TrainConfig
    splits: bool  # the method makes a GMM split
    corrects: bool  # the method proposes corrections
    rounds: list[GmmRound]
    clean_prob: np.ndarray  # (N,)
    flagged: np.ndarray  # (N,) bool
    scores: np.ndarray  # (N,) the standing split's scores
    thresholds: np.ndarray | None
    corrections: Mapping[int, np.ndarray]  # training index -> its correction, (S, S) or soft (K, S, S)
    n_total: int  # training + held back
    validation_dice: float | None
    validation_source: str | None  # "held_out", "supplied" (the caller's validation images) or None
    held_scores: np.ndarray  # (M,) the held-back masks' scores
    # For the image-edge check (gtcorrect.boundary); without them it is skipped.
    images: np.ndarray | None = None  # (N, C, S, S) training images
    masks: np.ndarray | None = None  # (N, S, S) their given masks
    held_alignment: np.ndarray | None = None  # (M,) edge alignment of the held-back given masks


def assess(ev: Evidence, fetch: Fetch) -> tuple[Quality, Verdict, np.ndarray]:
    """Judge a run; return its ``Quality``, the final training verdicts and the held-back masks'
    clean probabilities (M,). ``fetch(indices)`` gives the kept network's probabilities (len, K, S, S)
    and the given masks (len, S, S) of training images (one forward pass over the calibration masks)."""
    cfg, q = ev.config, ev.config.quality
    warnings: list[Warning] = []
    n = ev.clean_prob.size
    if ev.n_total - ev.held_scores.size < q.min_samples:
        warnings.append(
            Warning(
                "too_few_samples",
                f"{n} training samples: fewer than {q.min_samples} are too few to tell wrong masks "
                "from hard ones.",
            )
        )
    if ev.validation_dice is None:
        warnings.append(
            Warning(
                "no_validation",
                f"too few samples to hold back a validation split ({q.val_fraction:.0%} of {ev.n_total} is "
                f"under {q.min_val_samples}): the network's quality is unknown.",
            )
        )
    elif ev.validation_dice < q.min_val_dice:
        warnings.append(
            Warning(
                "weak_network",
                f"validation Dice {ev.validation_dice:.2f} is below "
                f"{q.min_val_dice:.2f}: "
                "the network is too weak to judge the masks.",
            )
        )
    if not ev.splits:
        quality = Quality(
            ev.n_total,
            ev.held_scores.size,
            ev.validation_dice,
            None,
            None,
            None,
            None,
            None,
            None,
            CORRECTIONS_NONE,
            f"method {cfg.method!r} makes no corrections",
            0,
            warnings,
            ev.validation_source,
        )
        none = np.zeros(n, dtype=bool)
        return quality, Verdict(ev.clean_prob, ev.flagged, none), np.ones(ev.held_scores.size)
    return _assess_split(ev, fetch, warnings)


def _assess_split(ev: Evidence, fetch: Fetch, warnings: list[Warning]) -> tuple[Quality, Verdict, np.ndarray]:
    cfg, q, g = ev.config, ev.config.quality, ev.config.g
    standing = standing_split(ev.rounds)
    last = ev.rounds[-1] if ev.rounds else None
    evidence = (
        standing is not None
        and last is not None
        and last.applied
        and is_bimodal(last, q.min_separation, g.min_component_weight, g.max_flagged_share)
    )
    flagged = ev.flagged.copy() if evidence else np.zeros_like(ev.flagged)
    seed = cfg.seed + (standing.round if standing is not None else 0)
    mixture = fit_mixture(ev.scores, g, seed)
    trusted = trusted_indices(ev.clean_prob, ev.scores, flagged, q.calibration_samples)
    calibration = None
    if trusted.size:
        calibration = matched_self_test(
            fetch, trusted, np.flatnonzero(flagged), mixture, ev.thresholds, cfg, ev.images
        )
    boundary, joint = check_boundary(ev, mixture, calibration, seed) if evidence else (None, None)
    if not evidence:
        why = "no split was made"
        if last is not None:
            limits = (q.min_separation, g.min_component_weight, g.max_flagged_share)
            why = not_bimodal_because(last, *limits) or "the last split was not applied"
        warnings.append(
            Warning(
                "no_evidence_of_noise",
                f"the scores show no two groups ({why}): nothing is flagged; read the scores as a ranking "
                "only.",
            )
        )
    elif boundary is not None and boundary.refutes:
        evidence = False
        flagged = np.zeros_like(ev.flagged)
        warnings.append(
            Warning(
                "no_evidence_of_noise",
                f"{boundary.reason}: nothing is flagged; read the scores as a ranking only.",
            )
        )
    held_clean = mixture.clean_prob(ev.held_scores) if evidence else np.ones(ev.held_scores.size)
    false_rate = float(ev.clean_prob[flagged].mean()) if flagged.any() else None
    clean_prob = ev.clean_prob
    rate_of: Callable[[np.ndarray], float] = _network_rate(ev.scores, cfg, seed)
    if joint is not None:
        # The self-test judges its copies as the job judges its masks: with the joint split.
        calibration = (
            matched_self_test(
                fetch, trusted, np.flatnonzero(flagged), mixture, ev.thresholds, cfg, ev.images, joint.judge
            )
            or calibration
        )
        clean_prob, held_clean, rate_of = joint.clean_prob, joint.held_clean, joint.rate
        flagged = clean_prob <= g.tau
    if calibration is not None and evidence and calibration.recall < q.min_calibration_recall:
        warnings.append(
            Warning(
                "low_calibration_recall",
                f"the self-test flagged {calibration.recall:.0%} of the "
                "corrupted copies of trusted masks: many wrong masks may be missed.",
            )
        )
    n_flag = int(flagged.sum()) + int((held_clean <= g.tau).sum())
    rate = n_flag / ev.n_total
    if rate > q.max_flagged_fraction:
        warnings.append(
            Warning(
                "most_masks_flagged",
                f"{rate:.0%} of the masks are flagged: more likely a weak or biased "
                "network than that many wrong masks.",
            )
        )
    status, reason = _gate(ev, evidence, false_rate, calibration, warnings)
    proposed = np.zeros(ev.flagged.size, dtype=bool)
    has_correction = np.isin(np.arange(flagged.size), sorted(ev.corrections))
    if status == CORRECTIONS_APPLIED and not q.gate:
        proposed = flagged & has_correction
    elif status == CORRECTIONS_APPLIED and calibration is not None:
        beta = max(calibration.gain_ratio, 0.0)
        noisy = 1.0 - clean_prob
        gain = (noisy * beta > 1.0 - noisy) & (noisy >= q.min_noise_prob)
        proposed = flagged & has_correction & gain
        if joint is not None and boundary is not None:
            follows = joint.correction_follows_edges(ev, proposed)
            boundary = replace(boundary, vetoed=int((proposed & ~follows).sum()))
            proposed &= follows
        if not proposed.any():
            status = CORRECTIONS_WITHHELD
            reason = (
                f"no flagged mask is noisy with probability >= {q.min_noise_prob:.2f} and has a correction "
                "with a positive expected gain" + (" that follows the image's edges better" if joint else "")
            )
    if status == CORRECTIONS_WITHHELD:
        warnings.append(Warning("corrections_withheld", f"corrected masks are withheld: {reason}."))
    quality = Quality(
        n_samples=ev.n_total,
        n_held_out=int(ev.held_scores.size),
        validation_dice=ev.validation_dice,
        noise_evidence=bool(evidence),
        separation=None if last is None else float(last.separation),
        estimated_noise_rate=float(rate),
        noise_rate_interval=noise_rate_interval(rate_of, ev.scores.size, cfg.quality.bootstrap, seed),
        false_flag_rate=false_rate,
        calibration=calibration,
        corrections=status if ev.corrects else CORRECTIONS_NONE,
        corrections_reason=reason if ev.corrects else f"method {cfg.method!r} makes no corrections",
        n_proposed=int(proposed.sum()),
        warnings=warnings,
        validation_source=ev.validation_source,
        boundary=boundary,
    )
    return quality, Verdict(clean_prob, flagged, proposed), held_clean


@dataclass
class JointSplit:
    """The final split over (network score, edge alignment): clean probabilities of the training (N,)
    and held-back (M,) masks, and the flagged share of a resample (indices into the training masks)."""

    clean_prob: np.ndarray
    held_clean: np.ndarray
    rate: Callable[[np.ndarray], float]
    alignment: np.ndarray  # (N,) of the given masks
    mixture: ScoreMixture  # the network-score normalisation
    fit: JointMixture
    tau: float

    def judge(self, scores: np.ndarray, masks: np.ndarray, images: np.ndarray | None) -> np.ndarray:
        """Flags (M,) of new masks (M, S, S) from their network scores (M,) and images (M, C, S, S)."""
        if images is None:
            raise ValueError("the joint split judges masks with their images.")
        net = self.mixture.normalise(scores)
        return np.asarray(self.fit.clean_prob(net, edge_alignment(images, masks)) <= self.tau)

    def correction_follows_edges(self, ev: Evidence, candidates: np.ndarray) -> np.ndarray:
        """(N,) bool: the candidate's correction follows the image's edges better than its given mask
        (True where either has no outline: no evidence against it)."""
        out = np.ones(candidates.size, dtype=bool)
        idx = np.flatnonzero(candidates)
        if ev.images is None or idx.size == 0:
            return out
        hard = np.stack([_hard(ev.corrections[int(i)]) for i in idx])
        after, before = edge_alignment(ev.images[idx], hard), self.alignment[idx]
        out[idx] = ~(np.isfinite(after) & np.isfinite(before) & (after <= before))
        return out


def _hard(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask.argmax(0) if mask.ndim == 3 else mask)


def check_boundary(
    ev: Evidence, mixture: ScoreMixture, calibration: Calibration | None, seed: int
) -> tuple[BoundaryCheck | None, JointSplit | None]:
    """Whether image edges may confirm the network's verdicts on this data, and the joint split when
    they may (``BoundaryCheck``)."""
    q = ev.config.quality
    if not q.boundary or ev.images is None or ev.masks is None or ev.held_alignment is None:
        return None, None
    auroc = None if calibration is None else calibration.edge_auroc
    if auroc is None or auroc < q.min_edge_auroc:
        shown = "n/a" if auroc is None else f"{auroc:.2f}"
        reason = (
            f"edge alignment tells the self-test's copies apart with AUROC {shown}, below "
            f"{q.min_edge_auroc:.2f}: this data's edges are no evidence"
        )
        return BoundaryCheck(auroc, False, reason), None
    alignment = edge_alignment(ev.images, ev.masks)
    confirmation = low_alignment_auroc(alignment, ev.flagged)
    if confirmation is not None and confirmation < q.min_edge_confirmation:
        reason = (
            f"the image's edges do not confirm the split: the masks it flags follow the edges about as well "
            f"as the others (AUROC {confirmation:.2f}, needs {q.min_edge_confirmation:.2f}), as hard images "
            "do and wrong masks do not"
        )
        return BoundaryCheck(auroc, False, reason, confirmation=confirmation, refutes=True), None
    net, held_net = mixture.normalise(ev.scores), mixture.normalise(ev.held_scores)
    fit = fit_joint(net, alignment, seed, ev.config.g.min_component_weight)
    if isinstance(fit, str):
        return BoundaryCheck(auroc, False, fit), None
    clean_prob = fit.clean_prob(net, alignment)
    held_clean = fit.clean_prob(held_net, ev.held_alignment)
    tau, min_weight = ev.config.g.tau, ev.config.g.min_component_weight

    def rate(sample: np.ndarray) -> float:
        refit = fit_joint(net[sample], alignment[sample], seed, min_weight)
        if isinstance(refit, str):
            return 0.0
        return float(np.mean(refit.clean_prob(net[sample], alignment[sample]) <= tau))

    check = BoundaryCheck(
        auroc, True, "the image's edges confirm the network's split", confirmation, False, fit.noisy_weight
    )
    return check, JointSplit(clean_prob, held_clean, rate, alignment, mixture, fit, tau)


def _gate(
    ev: Evidence,
    evidence: bool,
    false_rate: float | None,
    calibration: Calibration | None,
    warnings: list[Warning],
) -> tuple[str, str]:
    """The job-level correction gate: (status, reason)."""
    q = ev.config.quality
    if not ev.corrects:
        return CORRECTIONS_NONE, ""
    if not q.gate:
        return CORRECTIONS_APPLIED, "the gate is off (quality.gate=false): every flagged mask's correction"
    blocking = {"too_few_samples", "weak_network", "no_validation"} & {w.code for w in warnings}
    if not evidence:
        return CORRECTIONS_WITHHELD, "no evidence of noise"
    if blocking:
        return CORRECTIONS_WITHHELD, "the job cannot vouch for its network (" + ", ".join(
            sorted(blocking)
        ) + ")"
    if false_rate is not None and false_rate > q.max_false_flag_rate:
        return CORRECTIONS_WITHHELD, (
            f"the mixture estimates {false_rate:.0%} of the flagged masks are correct "
            f"(at most {q.max_false_flag_rate:.0%} allowed)"
        )
    if calibration is None:
        return CORRECTIONS_WITHHELD, "too few trusted masks for the self-test"
    if calibration.dice_corrected <= calibration.dice_corrupted:
        return CORRECTIONS_WITHHELD, (
            "in the self-test correcting did not repair corrupted masks "
            f"(Dice {calibration.dice_corrupted:.2f} "
            f"-> {calibration.dice_corrected:.2f})"
        )
    return CORRECTIONS_APPLIED, "the job's evidence holds"
