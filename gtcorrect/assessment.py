"""The job's final verdict, once training has ended (phase ``assessing``).

G-T: one evidence pass with the kept network (``gtcorrect.evidence``; each image and its flips) over every
training mask, every held-back mask and the self-test's copies; one verdict over them
(``gtcorrect.verdict``); the annotator check on top (``gtcorrect.bias``); corrections for exactly the
flagged training masks; one summary (``gtcorrect.quality``). The peers keep their own split
(``gmm_select``, ``coteaching``) or make none (``noisy``, ``clean``). Every method gets the annotator
report when the annotators are known, offsets in original pixels.
Shape legend: N masks (training and held back), T training, H held back, K classes, S size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import binom

from gtcorrect.annotators import annotator_report
from gtcorrect.bias import AnnotatorCheck, check_annotators
from gtcorrect.boundary import edge_alignment
from gtcorrect.config import QualityConfig
from gtcorrect.evidence import class_disagreement, edge_maps, measure_masks
from gtcorrect.gstage import fit_mixture
from gtcorrect.gt import final_corrections
from gtcorrect.loop import Run
from gtcorrect.losses import per_sample_loss
from gtcorrect.methods import judge_training_masks, loss_scores
from gtcorrect.quality import (
    NO_VERDICT,
    UNVOUCHED,
    Judged,
    Quality,
    SelfTest,
    Validation,
    network_warnings,
    summarise,
)
from gtcorrect.selftest import correction_check
from gtcorrect.types import GmmRound, TrainingData, json_safe
from gtcorrect.verdict import Verdict, copy_recall, flag, match_quantiles, rate_interval, transfer_recall


@dataclass
class Assessment:
    """The final verdict on all N masks, the corrections (mask index -> mask) proposed and withheld, the
    job's ``Quality``, the kept network's predictions and the annotator report."""

    score: np.ndarray  # (N,) the ranking: higher is more doubtful
    clean_prob: np.ndarray  # (N,)
    flagged: np.ndarray  # (N,) bool
    decided_by: list[str]  # (N,) the evidence that raised each mask's doubt most
    final_round: GmmRound | None
    corrected: dict[int, np.ndarray]
    withheld: dict[int, np.ndarray]
    quality: Quality
    predicted: np.ndarray  # (N, S, S) uint8
    annotator_report: list[dict[str, object]]
    withheld_because: list[str | None]  # (N,) why a flagged mask's correction was not proposed


def validation_of(
    probs: np.ndarray, masks: np.ndarray, names: Sequence[str], source: str
) -> Validation | None:
    """Dice of the prediction (argmax of probs (M, K, S, S)) against masks (M, S, S): per foreground class
    over the images where either has it, and their mean."""
    if len(masks) == 0:
        return None
    per = 1.0 - class_disagreement(probs.argmax(1), masks, probs.shape[1])
    seen = [c for c in range(per.shape[1]) if np.isfinite(per[:, c]).any()]
    per_class = {names[c + 1]: float(np.nanmean(per[:, c])) for c in seen}
    return Validation(
        float(np.mean(list(per_class.values()))) if per_class else 1.0, per_class, len(masks), source
    )


def place(train: np.ndarray, held: np.ndarray, train_idx: np.ndarray, held_idx: np.ndarray) -> np.ndarray:
    """Training and held-back values (T, ...), (H, ...) at their positions among all N masks."""
    out = np.zeros((train_idx.size + held_idx.size, *train.shape[1:]), dtype=train.dtype)
    out[train_idx], out[held_idx] = train, held
    return out


def assess(
    run: Run, keep: str, data: TrainingData, train_idx: np.ndarray, held_idx: np.ndarray
) -> Assessment:
    """The final verdict of a finished run on all of ``data`` (``train_idx``: the run's training masks)."""
    held_images = np.asarray(data.images[held_idx])
    held_masks = np.asarray(data.masks[held_idx], dtype=np.int64)
    held_probs = run.probs_of(keep, torch.as_tensor(held_images, dtype=torch.float32), views=4)
    validation = validation_of(held_probs, held_masks, data.label_map.names, "held_out")
    if validation is None and data.val_images is not None and data.val_masks is not None:
        probs = run.probs_of(keep, torch.as_tensor(data.val_images, dtype=torch.float32))
        validation = validation_of(probs, np.asarray(data.val_masks), data.label_map.names, "supplied")
    predicted = place(run.predicted(keep), held_probs.argmax(1).astype(np.uint8), train_idx, held_idx)
    config, n = run.config, data.images.shape[0]
    held = np.isin(np.arange(n), held_idx)
    final_round, bias, moved, corrections = None, None, {}, {}
    selftest = None
    if config.method == "gt":
        verdict = judge_training_masks(
            run, keep, run.state.rounds[-1].round + 1 if run.state.rounds else 0, views=4
        )
        final_round = verdict.record
        held_score, held_noise = _judge_held(run, keep, verdict, held_probs, held_masks, held_images)
        selftest = _selftest(run, keep, verdict, held_score)
        noise_train, decided = verdict.noise_prob, list(verdict.decided_by)
        interval = rate_interval(verdict, held_score, config.quality.bootstrap, config.seed)
        trusted = not UNVOUCHED & {w.code for w in network_warnings(config, n, held_idx.size, validation)}
        bias = _annotator_check(run, predicted[train_idx], noise_train, trusted)
        if bias is not None:
            raised = bias.noise_prob > noise_train + 1e-9
            decided = ["annotator outline offset" if r else d for d, r in zip(decided, raised, strict=True)]
            noise_train, moved = bias.noise_prob, bias.moved
        flags_train = flag(noise_train, config.g)
        network = np.flatnonzero(flags_train & ~np.isin(np.arange(run.n), list(moved)))
        corrections = final_corrections(run, keep, network)
        score = place(verdict.score, held_score, train_idx, held_idx)
    else:
        noise_train, score_train, decided = (
            1.0 - run.state.clean_prob,
            run.state.sample_loss,
            ["loss"] * run.n,
        )
        held_score, held_noise = _loss_held(run, keep, held_probs, held_masks)
        score = place(score_train, held_score, train_idx, held_idx)
        interval = (float(run.state.flagged.mean()),) * 2
    noise = place(np.asarray(noise_train, dtype=np.float64), held_noise, train_idx, held_idx)
    flags = (
        flag(noise, config.g)
        if config.method in ("gt", "gmm_select")
        else place(run.state.flagged, held_noise > 0.5, train_idx, held_idx)
    )
    has, follows = _corrections_follow_edges(run, corrections, train_idx, n)
    rate = float(noise.mean())
    reach = within_reach(predicted, np.asarray(data.masks), held, flags, has, rate, config.quality)
    judged = Judged(
        noise,
        flags,
        held,
        has,
        follows,
        reach,
        rate,
        (min(interval[0], rate), max(interval[1], rate)),
        None if final_round is None else final_round.separation,
    )
    splits = config.method not in NO_VERDICT
    quality, proposed, withheld_because = summarise(
        config, judged, validation, selftest, None if bias is None else bias.summary, len(moved)
    )
    every = {int(train_idx[j]): m for j, m in corrections.items()}
    corrected = {i: m for i, m in every.items() if proposed[i]}
    corrected.update({int(train_idx[j]): m.astype(np.int64) for j, m in moved.items()})
    return Assessment(
        score=score,
        clean_prob=1.0 - noise if splits else np.ones(n),
        flagged=flags if splits else np.zeros(n, dtype=bool),
        decided_by=list(
            place(
                np.array(decided, dtype=object),
                np.array(["held back"] * held_idx.size, dtype=object),
                train_idx,
                held_idx,
            )
        ),
        final_round=final_round,
        corrected=corrected,
        withheld={i: m for i, m in every.items() if i not in corrected},
        quality=quality,
        predicted=predicted,
        annotator_report=_report(data, predicted, flags if splits else np.zeros(n, dtype=bool)),
        withheld_because=withheld_because,
    )


def _judge_held(
    run: Run, keep: str, verdict: Verdict, probs: np.ndarray, masks: np.ndarray, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and probabilities of being wrong of the held-back masks. The network never trained on them,
    so every one of them looks worse to it than a training mask would: on clean Kvasir-SEG 19 % of the
    held-back masks scored as wrong against 4 % of the training masks (hard images a network partly
    memorises when it trains on them). The two are random halves of one set of masks, so the held-back
    scores are brought onto the training scores by their rank (each takes the training score at its own
    quantile) and judged by the training masks' mixture."""
    if verdict.judge is None:
        return _loss_held(run, keep, probs, masks)
    raw, _ = verdict.judge.judge(measure_masks(probs, masks, edge_maps(images)))
    matched = match_quantiles(raw, verdict.score)
    return matched, verdict.judge.mixture.noise_prob(matched)


def _loss_held(run: Run, keep: str, probs: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Held-back masks scored with ``g.sample_loss`` and judged by the mixture of the training masks' last
    scores (``g.detector="loss"`` and the peers)."""
    g = run.config.g
    losses = per_mask_loss(probs, masks, g.sample_loss, g.confident_floor)
    if not run.state.rounds or losses.size == 0:
        return losses, np.zeros(losses.size)
    mixture = fit_mixture(run.state.sample_loss, g, run.config.seed)
    return losses, 1.0 - mixture.clean_prob(losses)


def per_mask_loss(probs: np.ndarray, masks: np.ndarray, kind: str, floor: float) -> np.ndarray:
    """Per-mask score (M,) of masks (M, S, S) under fixed network probabilities (M, K, S, S)."""
    if probs.shape[0] == 0:
        return np.zeros(0)
    kind = "ce+dice" if kind == "trajectory" else kind  # one network, one epoch: the plain score
    logits = torch.log(torch.as_tensor(probs, dtype=torch.float32).clamp_min(1e-7))
    return (
        per_sample_loss(logits, torch.as_tensor(masks, dtype=torch.int64), kind, floor=floor).double().numpy()
    )


def _selftest(run: Run, keep: str, verdict: Verdict, held_score: np.ndarray) -> SelfTest:
    config, st = run.config, run.selftest()
    pool_probs = run.predict_probs(keep, st.pool)
    masks = np.asarray(run.data.masks)
    if verdict.judge is not None:
        recall, by_family = copy_recall(verdict, st.copies.family, config.g)
        transfer = transfer_recall(verdict, st.copies.family, config.g)
    else:  # the loss detector: the copies judged by the mixture of the training masks' losses
        g = config.g
        losses = per_mask_loss(
            pool_probs[st.copies.source], st.copies.masks, g.sample_loss, g.confident_floor
        )
        caught = flag(1.0 - fit_mixture(loss_scores(run, keep), g, config.seed).clean_prob(losses), g)
        recall = float(caught.mean()) if caught.size else 0.0
        by_family = {
            str(f): float(caught[st.copies.family == f].mean())
            for f in dict.fromkeys(st.copies.family.tolist())
        }
        transfer = {}
    check = correction_check(
        pool_probs, masks[st.pool], st.copies, run.state.thresholds, config.t.confidence_floor
    )
    return SelfTest(
        len(st.pool), len(st.copies), config.quality.selftest_strength, recall, by_family, transfer, check
    )


def _annotator_check(
    run: Run, predicted: np.ndarray, noise: np.ndarray, trusted: bool
) -> AnnotatorCheck | None:
    data, config = run.data, run.config
    if data.annotators is None or not config.quality.annotators:
        return None
    return check_annotators(
        config,
        np.asarray(data.images),
        np.asarray(data.masks),
        data.annotators,
        predicted,
        noise,
        trusted=trusted,
        trained=run.state.targets.keys(),
    )


def _corrections_follow_edges(
    run: Run, corrections: dict[int, np.ndarray], train_idx: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) which masks have a correction, and whether it follows the image's edges at least as well as
    the given mask (True where either has no outline: no evidence against it)."""
    has, follows = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
    if not corrections:
        return has, follows
    idx = np.array(sorted(corrections))
    hard = np.stack([corrections[j].argmax(0) if corrections[j].ndim == 3 else corrections[j] for j in idx])
    images = np.asarray(run.data.images)[idx]
    after = edge_alignment(images, hard)
    before = edge_alignment(images, np.asarray(run.data.masks)[idx])
    has[train_idx[idx]] = True
    follows[train_idx[idx]] = ~(np.isfinite(after) & np.isfinite(before) & (after < before))
    return has, follows


def within_reach(
    predicted: np.ndarray,
    masks: np.ndarray,
    held: np.ndarray,
    flagged: np.ndarray,
    asked: np.ndarray,
    rate: float,
    q: QualityConfig,
) -> np.ndarray:
    """(N,) False where an ``asked`` mask's correction is of a size at which the flags come from the network
    rather than from the masks (True elsewhere).

    A correction is the network's own segmentation. Where the network cannot segment objects of some size,
    it disagrees with every mask of that size, and the verdict flags them all: right or wrong. The held-back
    masks (never trained on) show it: among the ``q.reach_neighbours`` nearest the asked mask in predicted
    area, more are flagged than the job's noise ``rate`` can explain (a binomial test at
    ``q.reach_significance``). Wrong masks are as likely at one size as at another; a network's failures are
    not. By the predicted size, not the given one, because an eroded or a dilated mask's own size is what is
    wrong with it; pairs empty on both sides are left out (they are never flagged and say nothing of the
    network's reach). On clean MSD hippocampus slices the network could not segment the smallest
    cross-sections, flagged them all and its corrections made 133 expert masks worse (BENCHMARKS.md)."""
    reach = np.ones(predicted.shape[0], dtype=bool)
    area = (predicted > 0).reshape(predicted.shape[0], -1).sum(1)
    pool = held & ((area > 0) | (masks > 0).reshape(masks.shape[0], -1).any(1))
    if not pool.any() or not asked.any():
        return reach
    pool_area, pool_flagged = area[pool], flagged[pool]
    nearest = min(q.reach_neighbours, int(pool.sum()))
    for i in np.flatnonzero(asked):
        near = np.argpartition(np.abs(pool_area - area[i]), nearest - 1)[:nearest]
        reach[i] = binom.sf(int(pool_flagged[near].sum()) - 1, nearest, rate) >= q.reach_significance
    return reach


def _report(data: TrainingData, predicted: np.ndarray, flagged: np.ndarray) -> list[dict[str, object]]:
    """The annotator report over all masks, offsets in pixels of the original images; empty when the
    annotators are not known."""
    if data.annotators is None:
        return []
    size = data.images.shape[-1]
    sizes = data.original_sizes or [(size, size)] * len(data.annotators)
    scales = np.array([np.sqrt(h * w) / size for h, w in sizes])
    masks = np.asarray(data.masks)
    report = annotator_report(
        data.annotators, masks, predicted, flagged, scales, edge_alignment(data.images, masks)
    )
    return [dict(json_safe(asdict(stats))) for stats in report]
