"""The peer methods under the shared trainer: plain training (``noisy``/``clean``), GMM-select
(DivideMix-style split every epoch, train on the clean set) and Co-teaching (Han et al., NeurIPS 2018).

Each ``run_*`` trains in place on a ``gtcorrect.loop.Run`` (resuming from a checkpoint if given) and
returns the name of the net to keep. Shape legend: N images, B batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gtcorrect.augment import augment_batch
from gtcorrect.checkpoint import Checkpoint
from gtcorrect.gstage import score_samples, trajectory_score, update_round_decided
from gtcorrect.loop import Run
from gtcorrect.losses import per_sample_loss, seg_loss
from gtcorrect.types import GmmRound
from gtcorrect.verdict import Verdict, decide, decide_by_loss

DEFAULT_FORGET_RATE = 0.3


def record_epoch_score(run: Run, name: str) -> None:
    """For sample_loss="trajectory": keep this epoch's "ce+dice" scores (only the window needed)."""
    g = run.config.g
    if g.sample_loss != "trajectory":
        return
    run.state.scores.append(
        score_samples(run.nets[name], run.images, run.masks, "ce+dice", run.config.batch_size)
    )
    run.state.scores = run.state.scores[-max(1, g.trajectory_epochs) :]


def split(run: Run, name: str, round_index: int) -> GmmRound:
    """Judge every training mask with net ``name`` and update the run's split (in place): the learned
    verdict over the evidence (``g.detector="evidence"``, ``gtcorrect.verdict.decide``) or the paper's GMM
    on one per-sample loss (``"loss"``; gmm_select always)."""
    verdict = judge_training_masks(run, name, round_index)
    state = run.state
    if state.rounds:
        state.round_decided = update_round_decided(
            state.round_decided, state.flagged, verdict.flagged, round_index
        )
    state.clean_prob, state.flagged, state.sample_loss = (
        1.0 - verdict.noise_prob,
        verdict.flagged,
        verdict.score,
    )
    state.rounds.append(verdict.record)
    return verdict.record


def judge_training_masks(run: Run, name: str, round_index: int, views: int = 1) -> Verdict:
    """The verdict of net ``name`` on every training mask (``views``: test-time flips of the evidence)."""
    g, state = run.config.g, run.state
    previous = state.flagged if state.rounds else None
    seed = run.config.seed + round_index
    if g.detector == "evidence" and run.config.method == "gt":
        table, copy_table, _ = run.evidence(name, views)
        st = run.selftest()
        return decide(table, st.pool, st.copies, copy_table, g, seed, round_index, previous)
    return decide_by_loss(loss_scores(run, name), g, seed, round_index, previous)


def loss_scores(run: Run, name: str) -> np.ndarray:
    """Every training mask's ``g.sample_loss`` under net ``name`` (N,)."""
    g, state = run.config.g, run.state
    if g.sample_loss == "trajectory":
        if not state.scores:
            record_epoch_score(run, name)
        return trajectory_score(state.scores, g.trajectory_epochs)
    return score_samples(
        run.nets[name], run.images, run.masks, g.sample_loss, run.config.batch_size, floor=g.confident_floor
    )


def clean_indices(run: Run) -> np.ndarray:
    """Indices of the current clean set; all images if the split left fewer than 2 clean ones."""
    idx = np.flatnonzero(~run.state.flagged)
    return idx if idx.size >= 2 else np.arange(run.n)


def run_plain(run: Run, resume: Checkpoint | None) -> str:
    """``noisy``/``clean``: L_seg on the given masks for ``config.epochs`` epochs."""
    run.add_net("student")
    if resume is not None:
        run.restore(resume)
    total = run.config.epochs
    for epoch in range(run.state.epoch + 1, total + 1):
        loss = run.train_plain_epoch("student", np.arange(run.n), epoch)
        run.end_epoch(epoch, "train", total, {"train": loss})
    run.state.sample_loss = score_samples(
        run.nets["student"], run.images, run.masks, "ce+dice", run.config.batch_size
    )
    return "student"


def run_gmm_select(run: Run, resume: Checkpoint | None) -> str:
    """Warm up on all images, then split by GMM after every epoch and train on the clean set."""
    run.add_net("student")
    if resume is not None:
        run.restore(resume)
    total, warm = run.config.epochs, min(run.config.g.warmup_epochs, run.config.epochs)
    for epoch in range(run.state.epoch + 1, total + 1):
        indices = np.arange(run.n) if epoch <= warm else clean_indices(run)
        loss = run.train_plain_epoch("student", indices, epoch)
        record_epoch_score(run, "student")
        rnd = None
        if epoch >= warm:
            rnd = split(run, "student", epoch - warm).round
        run.end_epoch(epoch, "warmup" if epoch <= warm else "train", total, {"train": loss}, rnd)
    if not run.state.rounds:
        split(run, "student", 0)
    return "student"


def forget_rate_at(run: Run, epoch: int) -> float:
    """Co-teaching's schedule: linear from 0 to the forget rate over ``num_gradual`` epochs."""
    cfg = run.config.coteaching
    rate = DEFAULT_FORGET_RATE if cfg.forget_rate is None else cfg.forget_rate
    if cfg.num_gradual <= 1:
        return rate
    return rate * min((epoch - 1) / (cfg.num_gradual - 1), 1.0)


def _coteach_epoch(run: Run, epoch: int) -> float:
    net1, net2 = run.nets["student"], run.nets["peer"]
    opt1, opt2 = run.opts["student"], run.opts["peer"]
    gen = run.start_epoch(epoch)
    rate = forget_rate_at(run, epoch)
    net1.train()
    net2.train()
    losses = []
    for batch in run.batches(np.arange(run.n), run.config.batch_size, gen):
        run.check_stop(epoch)
        x, y = augment_batch(run.images[batch], run.masks[batch], run.config.augment, gen)
        logits1, logits2 = net1(x), net2(x)
        keep = max(1, int((1.0 - rate) * len(batch)))
        small1 = torch.argsort(per_sample_loss(logits1.detach(), y))[:keep]
        small2 = torch.argsort(per_sample_loss(logits2.detach(), y))[:keep]
        # Each network learns from the samples its peer finds easy (the exchange of Co-teaching).
        loss1 = seg_loss(logits1[small2], y[small2])
        loss2 = seg_loss(logits2[small1], y[small1])
        opt1.zero_grad(set_to_none=True)
        opt2.zero_grad(set_to_none=True)
        (loss1 + loss2).backward()
        opt1.step()
        opt2.step()
        run.state.step += 1
        losses.append(float(loss1.detach()))
    return float(np.mean(losses)) if losses else 0.0


def run_coteaching(run: Run, resume: Checkpoint | None) -> str:
    """Two networks exchange small-loss samples; the split is the small-loss selection of net 1.

    Result: sample_loss = net 1's "ce+dice" score; flagged = the ``forget_rate`` fraction with the
    largest scores (the full rate, not its ramp); clean_prob = 1 - the score's rank / (N - 1), a
    ranking rather than a calibrated probability.
    """
    run.add_net("student", 0)
    run.add_net("peer", 1)
    if resume is not None:
        run.restore(resume)
    total = run.config.epochs
    for epoch in range(run.state.epoch + 1, total + 1):
        loss = _coteach_epoch(run, epoch)
        run.end_epoch(epoch, "train", total, {"train": loss})
    scores = score_samples(run.nets["student"], run.images, run.masks, "ce+dice", run.config.batch_size)
    cfg = run.config.coteaching
    rate = DEFAULT_FORGET_RATE if cfg.forget_rate is None else cfg.forget_rate
    ranks = np.empty(run.n)
    ranks[np.argsort(scores, kind="stable")] = np.arange(run.n)
    run.state.sample_loss = scores
    run.state.clean_prob = 1.0 - ranks / max(run.n - 1, 1)
    run.state.flagged = ranks >= run.n - math.floor(rate * run.n + 0.5)
    return "student"
