"""A finished job's judgement of itself: one summary of its verdict, and the gate that decides which
corrections are proposed.

Every figure here is read from the verdict (``gtcorrect.verdict``), the self-test (``gtcorrect.selftest``)
and the annotator check (``gtcorrect.bias``); nothing is measured again. The summary is consistent by
construction: ``noise_evidence`` holds exactly when a mask is flagged (and then there is no
``no_evidence_of_noise`` warning), the estimated noise rate lies inside its interval, and the flagged
counts add up (training + held back). What the user reads (``Quality.to_dict``):
- ``validation``: Dice of the kept network on samples held back from training (``quality.val_fraction``)
  against their given masks, per class too: a lower bound of its true Dice when masks are noisy;
- ``estimated_noise_rate`` (mean probability of being wrong over every mask) and its bootstrap interval;
- ``flagged`` counts and ``false_flag_rate``, the verdict's own estimate of the share of correct masks
  among the flagged ones (their mean clean probability);
- ``selftest``: how many of the job's corrupted copies the verdict catches, per family and for each
  family it did not learn from, and whether confident correcting repairs them;
- the **correction gate**: corrections are proposed only when the job can vouch for its network (enough
  samples, a validation split, validation Dice at least ``quality.min_val_dice``), flags something, its
  false-flag estimate is at most ``quality.max_false_flag_rate`` and correcting repaired the copies. Per
  mask: its noisy probability q is at least ``quality.min_noise_prob``, the expected gain is positive
  (q x beta > 1 - q, beta the share of a correction's change the self-test saw come back as Dice), the
  corrected outline follows the image's edges at least as well as the given one, and the held-back masks
  of the correction's size are not flagged beyond the noise rate (``gtcorrect.assessment.within_reach``);
  and no corrections while the lower end of the estimated noise rate is under ``quality.min_noise_rate``
  (10 %).
Shape legend: N masks of the job (training and held back), K classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gtcorrect.config import TrainConfig
from gtcorrect.selftest import CorrectionCheck
from gtcorrect.types import json_safe

CORRECTIONS_APPLIED, CORRECTIONS_WITHHELD, CORRECTIONS_NONE = "applied", "withheld", "none"
# Warnings after which the job cannot vouch for its network: it still ranks, but corrects nothing. Most
# masks flagged is one: its own warning says a weak or biased network is likelier than that many wrong masks.
UNVOUCHED = frozenset({"too_few_samples", "weak_network", "no_validation", "most_masks_flagged"})


@dataclass(frozen=True)
class Warning:
    """A machine-readable code and one sentence for a person."""

    code: str
    message: str


@dataclass(frozen=True)
class SelfTest:
    """The verdict on the job's corrupted copies (``gtcorrect.selftest``): ``pool`` masks copied once per
    family at preset ``strength``; recall overall, per family, and per family when the detector learnt
    without it (``transfer``: how it does on a kind of error it has not seen)."""

    pool: int
    copies: int
    strength: str
    recall: float
    by_family: dict[str, float]
    transfer: dict[str, float] = field(default_factory=dict)
    correction: CorrectionCheck | None = None


@dataclass(frozen=True)
class Validation:
    dice: float
    per_class: dict[str, float]
    n: int
    source: str  # "held_out": held back from training; "supplied": the caller's validation images


@dataclass(frozen=True)
class Quality:
    """What a job says about its own verdicts; ``to_dict`` is the job's ``quality`` JSON."""

    n_samples: int
    n_held_out: int
    validation: Validation | None
    # The verdict's figures; their defaults are a method that judges no mask (``NO_VERDICT``).
    detector: str | None = None  # "evidence", "loss"
    noise_evidence: bool | None = None
    estimated_noise_rate: float | None = None
    noise_rate_interval: tuple[float, float] | None = None
    n_flagged: int = 0
    n_flagged_held_out: int = 0
    false_flag_rate: float | None = None
    separation: float | None = None  # of the final verdict's mixture
    selftest: SelfTest | None = None
    corrections: str = CORRECTIONS_NONE
    corrections_reason: str = ""
    n_proposed: int = 0
    warnings: list[Warning] = field(default_factory=list)
    annotator_bias: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.validation is not None:
            out["validation"]["note"] = (
                "against the given masks of held-back samples: a lower bound when masks are noisy"
                if self.validation.source == "held_out"
                else "against the validation masks supplied with the data"
            )
        out["flagged"] = {
            "total": self.n_flagged + self.n_flagged_held_out,
            "training": self.n_flagged,
            "held_out": self.n_flagged_held_out,
        }
        out["corrections"] = {
            "status": self.corrections,
            "reason": self.corrections_reason,
            "proposed": self.n_proposed,
        }
        for key in ("n_flagged", "n_flagged_held_out", "corrections_reason", "n_proposed"):
            del out[key]
        return dict(json_safe(out))


def contradictions(quality: dict[str, Any]) -> list[str]:
    """What a ``Quality.to_dict`` says against itself (empty when consistent): evidence against warnings,
    the rate outside its interval, flagged counts that do not add up, "applied" with nothing proposed.
    The property test and every benchmark run check their summaries with it."""
    out = []
    codes = {w["code"] for w in quality.get("warnings") or []}
    flagged, corrections = quality.get("flagged") or {}, quality["corrections"]
    if flagged and flagged["total"] != flagged["training"] + flagged["held_out"]:
        out.append("flagged counts do not add up")
    if quality.get("noise_evidence") is not None:
        if quality["noise_evidence"] != (flagged["total"] > 0):
            out.append("noise_evidence disagrees with the flagged count")
        if quality["noise_evidence"] == ("no_evidence_of_noise" in codes):
            out.append("noise_evidence disagrees with the warnings")
        lo, hi = quality["noise_rate_interval"]
        if not lo - 1e-9 <= quality["estimated_noise_rate"] <= hi + 1e-9:
            out.append("estimated noise rate outside its interval")
    if (corrections["status"] == CORRECTIONS_APPLIED) != (corrections["proposed"] > 0):
        out.append("corrections applied with nothing proposed, or proposed without being applied")
    if (corrections["status"] == CORRECTIONS_WITHHELD) != ("corrections_withheld" in codes):
        out.append("withheld corrections without their warning")
    return out


def holdout_indices(n: int, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-back) sample indices, sorted; nothing is held back when the share is too small to
    validate on (``quality.min_val_samples``) or would leave fewer images than one batch."""
    q = config.quality
    n_held = int(round(q.val_fraction * n))
    if n_held < max(q.min_val_samples, 1) or n - n_held < max(config.batch_size, 2):
        return np.arange(n), np.zeros(0, dtype=np.int64)
    order = np.random.default_rng([config.seed, 7919]).permutation(n)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def network_warnings(
    config: TrainConfig, n_total: int, n_held: int, validation: Validation | None
) -> list[Warning]:
    """What limits trust in the network itself: too few samples, no validation, a weak network."""
    q = config.quality
    out = []
    if n_total - n_held < q.min_samples:
        out.append(
            Warning(
                "too_few_samples",
                f"{n_total - n_held} training samples: fewer than {q.min_samples} are too few to tell wrong "
                "masks from hard ones.",
            )
        )
    if validation is None:
        out.append(
            Warning(
                "no_validation",
                f"too few samples to hold back a validation split ({q.val_fraction:.0%} of {n_total} is "
                f"under {q.min_val_samples}): the network's quality is unknown.",
            )
        )
    elif validation.dice < q.min_val_dice:
        out.append(
            Warning(
                "weak_network",
                f"validation Dice {validation.dice:.3f} is below the {q.min_val_dice:.3f} the job needs to "
                "judge masks: a longer preset or more images should help.",
            )
        )
    return out


@dataclass
class Judged:
    """What the gate reads about every mask (N): the verdict's probability that it is wrong, the flags,
    which masks were held back, and which training masks have a correction and whether that correction
    follows the image's edges at least as well as the given mask and is of a size at which the held-back
    masks are flagged no more than the noise rate explains (else the flags there come from the network)."""

    noise_prob: np.ndarray
    flagged: np.ndarray
    held_out: np.ndarray
    has_correction: np.ndarray
    follows_edges: np.ndarray
    in_reach: np.ndarray
    rate: float
    interval: tuple[float, float]
    separation: float | None


NO_VERDICT = frozenset({"noisy", "clean"})  # methods that train on every mask as given and judge none


def summarise(
    config: TrainConfig,
    judged: Judged,
    validation: Validation | None,
    selftest: SelfTest | None,
    annotator_bias: list[dict[str, Any]] | None = None,
    n_moved: int = 0,
) -> tuple[Quality, np.ndarray, list[str | None]]:
    """The job's ``Quality``, which masks (N,) get their correction proposed, and why each flagged mask's
    correction was withheld (None where it was not); ``n_moved``: outlines the annotator check moved back
    (always proposed). Plain training (``NO_VERDICT``) judges no mask."""
    q = config.quality
    n_total = judged.noise_prob.size
    n_held = int(judged.held_out.sum())
    warnings = network_warnings(config, n_total, n_held, validation)
    if config.method in NO_VERDICT:
        reason = f"method {config.method!r} makes no corrections"
        quality = Quality(n_total, n_held, validation, corrections_reason=reason, warnings=warnings)
        return quality, np.zeros(n_total, dtype=bool), [None] * n_total
    flagged, noise = judged.flagged, judged.noise_prob
    n_flag = int(flagged.sum())
    false_rate = float(1.0 - noise[flagged].mean()) if n_flag else None
    if not n_flag:
        warnings.append(
            Warning(
                "no_evidence_of_noise",
                "no mask looks wrong enough to flag; the probabilities in the report still rank the masks, "
                "most doubtful first.",
            )
        )
    if selftest is not None and selftest.recall < q.min_selftest_recall:
        warnings.append(
            Warning(
                "low_selftest_recall",
                f"the verdict caught {selftest.recall:.0%} of the job's own corrupted copies: wrong masks "
                "may be missed.",
            )
        )
    if n_flag / max(n_total, 1) > q.max_flagged_fraction:
        warnings.append(
            Warning(
                "most_masks_flagged",
                f"{n_flag / n_total:.0%} of the masks are flagged: more likely a weak or biased network than "
                "that many wrong masks.",
            )
        )
    for s in annotator_bias or []:
        side = "wider" if s["shift_px"] < 0 else "narrower"
        learnt = (
            f"; {s['trained_moved']} learnt from with the outline moved back" if s["trained_moved"] else ""
        )
        warnings.append(
            Warning(
                "annotator_bias",
                f"annotator {s['annotator']!r} outlines {abs(s['shift_px']):.1f} px {side} than the others "
                f"(an estimated {s['share']:.0%} of their masks): {s['flagged']} of their {s['masks']} masks "
                f"flagged, {s['proposed']} with the outline moved back{learnt}.",
            )
        )
    corrects = config.method == "gt" and config.t.correction != "none"
    status, reason = _gate(config, corrects, n_flag, false_rate, selftest, warnings, judged.interval[0])
    proposed = flagged & judged.has_correction & ~judged.held_out
    checks = _mask_checks(config, judged, selftest) if status == CORRECTIONS_APPLIED and q.gate else []
    if checks:
        proposed &= np.logical_and.reduce([ok for ok, _ in checks])
        if not proposed.any():
            status = CORRECTIONS_WITHHELD
            reason = (
                f"no flagged mask is wrong with probability >= {q.min_noise_prob:.2f} and has a correction "
                "with a positive expected gain that follows the image's edges at least as well, of a size "
                "at which the held-back masks are flagged no more than the noise rate explains"
            )
    elif status != CORRECTIONS_APPLIED:
        proposed = np.zeros_like(flagged)
    if status == CORRECTIONS_APPLIED and not proposed.any():  # never "applied" with nothing proposed
        status, reason = CORRECTIONS_WITHHELD, "no flagged mask has a correction"
    if n_moved:
        network = f"; the network's own corrections: {reason}" if status != CORRECTIONS_APPLIED else ""
        status, reason = CORRECTIONS_APPLIED, "a biased annotator's outlines moved back" + network
    if status == CORRECTIONS_WITHHELD:
        warnings.append(Warning("corrections_withheld", f"corrected masks are withheld: {reason}."))
    quality = Quality(
        n_samples=n_total,
        n_held_out=n_held,
        validation=validation,
        detector=config.g.detector if config.method == "gt" else "loss",
        noise_evidence=bool(n_flag),
        estimated_noise_rate=judged.rate,
        noise_rate_interval=judged.interval,
        n_flagged=int((flagged & ~judged.held_out).sum()),
        n_flagged_held_out=int((flagged & judged.held_out).sum()),
        false_flag_rate=false_rate,
        separation=judged.separation,
        selftest=selftest,
        corrections=status if corrects else CORRECTIONS_NONE,
        corrections_reason=reason if corrects else f"method {config.method!r} makes no corrections",
        n_proposed=int(proposed.sum()) + n_moved if corrects else 0,
        warnings=warnings,
        annotator_bias=annotator_bias,
    )
    proposed = proposed if corrects else np.zeros_like(flagged)
    return quality, proposed, _withheld_because(judged, proposed, checks, corrects)


def _mask_checks(
    config: TrainConfig, judged: Judged, selftest: SelfTest | None
) -> list[tuple[np.ndarray, str]]:
    """The gate's per-mask checks: (N,) which masks pass each, and what failing it means."""
    q, noise = config.quality, judged.noise_prob
    beta = max(selftest.correction.gain_ratio, 0.0) if selftest and selftest.correction else 0.0
    return [
        (noise >= q.min_noise_prob, f"probability of being wrong under {q.min_noise_prob:.2f}"),
        (noise * beta > 1.0 - noise, f"expected gain not positive (self-test gain ratio {beta:.2f})"),
        (judged.follows_edges, "the correction follows the image's edges less than the given mask"),
        (judged.in_reach, "masks of this size are flagged beyond the noise rate: the network may fail here"),
    ]


def _withheld_because(
    judged: Judged, proposed: np.ndarray, checks: list[tuple[np.ndarray, str]], corrects: bool
) -> list[str | None]:
    """(N,) why a flagged training mask's correction was not proposed, None where nothing was withheld:
    the first per-mask check of the gate it failed, or, where the job-level gate closed before them, that
    the job withheld every correction (``Quality.corrections_reason`` says why)."""
    asked = judged.flagged & judged.has_correction & ~judged.held_out & ~proposed
    out: list[str | None] = [None] * asked.size
    if not corrects:  # the method makes no corrections: nothing was withheld
        return out
    for i in np.flatnonzero(asked):
        failed = [why for ok, why in checks if not ok[i]]
        out[i] = failed[0] if failed else "the job withheld every correction"
    return out


def _gate(
    config: TrainConfig,
    corrects: bool,
    n_flag: int,
    false_rate: float | None,
    selftest: SelfTest | None,
    warnings: list[Warning],
    rate_low: float,
) -> tuple[str, str]:
    """The job-level correction gate: (status, reason)."""
    q = config.quality
    if not corrects:
        return CORRECTIONS_NONE, ""
    if not q.gate:
        return CORRECTIONS_APPLIED, "the gate is off (quality.gate=false): every flagged mask's correction"
    blocking = UNVOUCHED & {w.code for w in warnings}
    if not n_flag:
        return CORRECTIONS_WITHHELD, "no mask is flagged"
    if blocking:
        return CORRECTIONS_WITHHELD, "the job cannot vouch for its network (" + ", ".join(
            sorted(blocking)
        ) + ")"
    if rate_low < q.min_noise_rate:
        return CORRECTIONS_WITHHELD, (
            f"at most {rate_low:.0%} of the masks look wrong (the lower end of the estimate), under "
            f"{q.min_noise_rate:.0%}: so few flags are as likely hard images as wrong masks; review them"
        )
    if false_rate is not None and false_rate > q.max_false_flag_rate:
        return CORRECTIONS_WITHHELD, (
            f"the verdict estimates {false_rate:.0%} of the flagged masks are correct "
            f"(at most {q.max_false_flag_rate:.0%} allowed)"
        )
    check = selftest.correction if selftest is not None else None
    if check is None:
        return CORRECTIONS_WITHHELD, "too few masks for the self-test"
    if check.dice_corrected <= check.dice_corrupted:
        return CORRECTIONS_WITHHELD, (
            "in the self-test correcting did not repair corrupted masks "
            f"(Dice {check.dice_corrupted:.3f} -> {check.dice_corrected:.3f})"
        )
    return CORRECTIONS_APPLIED, "the job's evidence holds"
