"""G-T correcting (Gao et al., Med Biol Eng Comput 2024): G stage then T stage on one ``Run``.

G stage: warm-up on all images, a split (round 0), then positive-feedback rounds that train only on
the clean set and split again, until fewer than ``stop_change_frac`` images change side or ``rounds_max``.
Every split is the verdict of ``gtcorrect.verdict`` (``g.detector``) on the scoring network: the EMA of
the student's weights (``g.score_net="ema"``, our choice) or the student itself (the paper).
T stage: student from the G-stage weights, EMA teacher (the G stage's EMA goes on, or a copy of the
student); batches mix clean and flagged images; flagged images learn from their given masks during
early learning and from confidently corrected masks after the switch (see docs/METHOD.md); corrections
are recomputed from the teacher at the end of every correction-phase epoch. After the last epoch the
job's final verdict (``gtcorrect.trainer.fit``) decides which masks are flagged, and
``final_corrections`` corrects exactly those. The early-learning curve is the teacher's (eval mode)
Dice against the given flagged masks.
Shape legend: N images, Nf flagged, K classes, S size.
"""

from __future__ import annotations

import numpy as np
import torch

from gtcorrect.augment import augment_batch
from gtcorrect.bias import bias_targets
from gtcorrect.checkpoint import Checkpoint
from gtcorrect.config import schedule_epochs
from gtcorrect.gstage import feedback_converged
from gtcorrect.loop import Run
from gtcorrect.losses import elr_penalty, elr_update, seg_loss
from gtcorrect.methods import clean_indices, record_epoch_score, split
from gtcorrect.metrics import foreground_dice
from gtcorrect.tstage import (
    EarlyLearningDetector,
    class_thresholds,
    confident_flags,
    consistency_loss,
    ema_update,
    hard_correction,
    noisy_input,
    sigmoid_rampup,
    soft_correction,
)


def planned_epochs(run: Run) -> int:
    """Total epochs: the schedule's (``t.fill_schedule``: the T stage trains the feedback epochs the G
    stage left unused); without it, exact once the G stage has ended, else the schedule's upper bound."""
    if run.state.g_end and not run.config.t.fill_schedule:
        return run.state.g_end + run.config.t.epochs
    return schedule_epochs(run.config)


def _g_epoch(run: Run, epoch: int, detector: EarlyLearningDetector) -> None:
    g, state = run.config.g, run.state
    warm = g.warmup_epochs
    indices = np.arange(run.n) if epoch <= warm else clean_indices(run)
    ema = g.score_net == "ema"
    loss = run.train_plain_epoch("student", indices, epoch, ema="teacher" if ema else None)
    scorer = "teacher" if ema else "student"
    record_epoch_score(run, scorer)
    rnd: int | None = None
    if epoch == warm:
        _annotator_targets(run, scorer)
        rnd = split(run, scorer, 0).round
        if not g.feedback or g.rounds_max == 0:
            state.g_end = epoch
    elif epoch > warm and (epoch - warm) % g.epochs_per_round == 0:
        record = split(run, scorer, (epoch - warm) // g.epochs_per_round)
        rnd = record.round
        if feedback_converged(record.n_changed, run.n, g) or rnd >= g.rounds_max:
            state.g_end = epoch
    if state.g_end == epoch:
        _start_t(run, detector)
    run.end_epoch(epoch, "warmup" if epoch <= warm else "g_round", planned_epochs(run), {"train": loss}, rnd)


def _start_t(run: Run, detector: EarlyLearningDetector) -> None:
    """The teacher goes on from the G stage's EMA (``g.score_net="ema"``) or starts as a copy of the
    G-stage student; without early learning, correct now."""
    if run.config.g.score_net == "student":
        run.nets["teacher"].load_state_dict(run.nets["student"].state_dict())
    if run.config.t.elr:
        run.state.elr_memory = torch.zeros(run.n, run.k, *run.images.shape[2:], device=run.device)
    run.state.detector = detector.state_dict()
    _annotator_targets(run, "teacher")
    flagged = np.flatnonzero(run.state.flagged)
    if (detector.switched or run.config.t.epochs == 0) and run.config.t.correction != "none" and flagged.size:
        _correct(run, flagged, run.predict_probs("teacher", flagged))


def _annotator_targets(run: Run, net: str) -> None:
    """Bias-aware training (``t.annotator_targets``): with the annotators known, a suspect annotator's
    masks are learnt from with their outlines moved back, from the end of the warm-up on (the feedback
    rounds and the T stage); the check is made again with the G stage's network when the T stage starts."""
    data, config = run.data, run.config
    if data.annotators is None or not (config.t.annotator_targets and config.quality.annotators):
        return
    masks = np.asarray(data.masks)
    predicted = run.predicted(net)
    run.retarget(bias_targets(config, data.images, masks, data.annotators, predicted, run.state.flagged))


def _correct(run: Run, flagged: np.ndarray, probs: np.ndarray) -> None:
    """Confident correcting of the flagged masks from teacher probs (Nf, K, S, S), in place."""
    t, state = run.config.t, run.state
    given = run.targets[torch.as_tensor(flagged, device=run.device)].cpu().numpy()
    state.thresholds = class_thresholds(probs, given, state.thresholds, t.threshold_ema)
    flags = confident_flags(probs, given, state.thresholds, t.confidence_floor)
    fix = soft_correction if t.correction == "soft" else hard_correction
    corrected = fix(probs, given, flags)
    state.corrections = {int(i): corrected[j] for j, i in enumerate(flagged)}


def _flagged_targets(run: Run, correcting: bool) -> torch.Tensor | None:
    """(N, S, S) int64 or (N, K, S, S) float targets of flagged images in the correction phase."""
    if not correcting or not run.state.corrections:
        return None
    soft = run.config.t.correction == "soft"
    base = run.targets.clone()
    if soft:
        base = torch.nn.functional.one_hot(run.targets, run.k).permute(0, 3, 1, 2).float()
    for i, mask in run.state.corrections.items():
        base[i] = torch.as_tensor(mask, device=run.device)
    return base


def _t_step(
    run: Run,
    cb: torch.Tensor,
    fb: torch.Tensor,
    targets: torch.Tensor | None,
    lam: float,
    gen: torch.Generator,
) -> dict[str, float]:
    t, state = run.config.t, run.state
    student, teacher, opt = run.nets["student"], run.nets["teacher"], run.opts["student"]
    loss = torch.zeros((), device=run.device)
    parts: dict[str, float] = {}
    if cb.numel():
        x, y = augment_batch(run.images[cb], run.targets[cb], run.config.augment, gen)
        l_clean = seg_loss(student(x), y)
        loss = loss + l_clean
        parts["clean"] = float(l_clean.detach())
    if fb.numel():
        given = run.targets[fb] if targets is None else targets[fb]
        xf, yf = augment_batch(run.images[fb], given, run.config.augment, gen)
        s_logits = student(xf)
        with torch.no_grad():
            t_logits = teacher(noisy_input(xf, t.consistency_noise_std, t.consistency_noise_clip, gen))
        l_cons, l_flag = consistency_loss(s_logits, t_logits), seg_loss(s_logits, yf)
        loss = loss + lam * (l_cons + t.flagged_weight * l_flag)
        parts.update(consistency=float(l_cons.detach()), flagged=float(l_flag.detach()))
        if t.elr and state.elr_memory is not None:
            # ELR memory lives in the un-augmented frame, so it gets its own forward pass.
            probs = torch.softmax(student(run.images[fb]), 1)
            state.elr_memory[fb] = elr_update(state.elr_memory[fb], probs, t.elr_beta)
            l_elr = elr_penalty(probs, state.elr_memory[fb], t.elr_lambda)
            loss = loss + l_elr
            parts["elr"] = float(l_elr.detach())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    ema_update(teacher, student, t.ema_decay, state.step)
    state.step += 1
    return parts


def _t_batches(
    run: Run, clean: np.ndarray, flagged: np.ndarray, gen: torch.Generator
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(clean, flagged) index pairs: one pass over the clean set, the flagged set cycled alongside."""
    bs = run.config.batch_size
    nf = (
        0
        if flagged.size == 0
        else bs
        if clean.size == 0
        else min(max(round(bs * run.config.t.flagged_fraction), 1), bs - 1)
    )
    nc = bs - nf
    c_order = (
        torch.as_tensor(clean)[torch.randperm(clean.size, generator=gen)]
        if clean.size
        else torch.zeros(0, dtype=torch.int64)
    )
    n_iter = max(1, -(-clean.size // nc)) if nc else max(1, -(-flagged.size // nf))
    f_order = torch.zeros(0, dtype=torch.int64)
    while nf and f_order.numel() < n_iter * nf:
        f_order = torch.cat([f_order, torch.as_tensor(flagged)[torch.randperm(flagged.size, generator=gen)]])
    out = []
    for i in range(n_iter):
        cb, fb = c_order[i * nc : (i + 1) * nc], f_order[i * nf : (i + 1) * nf]
        if cb.numel() + fb.numel() >= 2:
            out.append((cb.to(run.device), fb.to(run.device)))
    return out


def _t_epoch(run: Run, epoch: int, detector: EarlyLearningDetector) -> None:
    t, state = run.config.t, run.state
    flagged = np.flatnonzero(state.flagged)
    use_flagged = t.correction != "none" and flagged.size > 0
    fl = flagged if use_flagged else np.zeros(0, dtype=np.int64)
    correcting = detector.switched
    t_epoch = epoch - state.g_end
    lam = sigmoid_rampup(t_epoch - 1, t.rampup_epochs, t.lambda_max)
    targets = _flagged_targets(run, correcting)
    gen = run.start_epoch(epoch)
    run.nets["student"].train()
    run.nets["teacher"].eval()
    sums: dict[str, list[float]] = {}
    for cb, fb in _t_batches(run, np.flatnonzero(~state.flagged), fl, gen):
        run.check_stop(epoch)
        for key, value in _t_step(run, cb, fb, targets, lam, gen).items():
            sums.setdefault(key, []).append(value)
    losses = {k: float(np.mean(v)) for k, v in sums.items()}
    last = epoch == planned_epochs(run)
    if flagged.size:
        probs = run.predict_probs("teacher", flagged)
        given = run.masks[torch.as_tensor(flagged, device=run.device)].cpu().numpy()
        losses["flagged_dice"] = float(foreground_dice(probs.argmax(1), given).mean())
        detector.update(losses["flagged_dice"])
        if t.correction != "none" and detector.switched and not last:
            _correct(run, flagged, probs)
    record_epoch_score(run, "teacher")  # sample_loss="trajectory": the teacher's last epochs
    state.detector = detector.state_dict()
    run.end_epoch(epoch, "t_correct" if correcting else "t_early", planned_epochs(run), losses)


def final_corrections(run: Run, net: str, flagged: np.ndarray) -> dict[int, np.ndarray]:
    """Confident correcting of the training masks ``flagged`` (indices) with net ``net`` after the last
    epoch: the corrections the final verdict's flagged masks are handed (``t.correction="none"``: none)."""
    if run.config.t.correction == "none" or flagged.size == 0:
        return {}
    run.restore_given()
    _correct(run, flagged, run.predict_probs(net, flagged))
    return dict(run.state.corrections)


def run_gt(run: Run, resume: Checkpoint | None) -> str:
    """Run G-T correcting; returns the net kept as the model ("teacher" or "student", ``t.keep``)."""
    t = run.config.t
    run.add_net("student")
    run.add_net("teacher", optimizer=False)
    detector = EarlyLearningDetector(
        t.early_learning, t.early_learning_slope_frac, t.early_learning_fixed_epochs
    )
    if resume is not None:
        run.restore(resume)
        if run.state.detector:
            detector.load_state_dict(run.state.detector)
        if run.state.elr_memory is not None:
            run.state.elr_memory = run.state.elr_memory.to(run.device)
        run.retarget(run.state.targets)
    epoch = run.state.epoch
    while not run.state.g_end:
        epoch += 1
        _g_epoch(run, epoch, detector)
    while epoch < planned_epochs(run):
        epoch += 1
        _t_epoch(run, epoch, detector)
    return "teacher" if t.keep == "teacher" else "student"
