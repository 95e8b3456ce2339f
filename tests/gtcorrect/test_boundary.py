"""Image-edge evidence (gtcorrect.boundary) and the joint split it feeds (gtcorrect.quality), on seeded
synthetic images whose objects have visible edges."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from gtcorrect.boundary import edge_alignment, edge_auroc, fit_joint, mask_alignment, outline
from gtcorrect.noise import simulate_noise, strong_mixed
from gtcorrect.quality import assess
from tests.gtcorrect.synthetic import make_noisy_set, run_evidence


def test_outline_marks_both_sides_of_every_boundary() -> None:
    mask = np.zeros((6, 6), dtype=np.int64)
    mask[2:4, 2:4] = 1
    line = outline(mask)
    assert line[2:4, 2:4].all() and line[1, 2] and line[2, 1] and not line[0, 0]
    assert not outline(np.zeros((6, 6))).any()
    assert np.isnan(mask_alignment(np.ones((6, 6)), np.zeros((6, 6))))


def test_the_true_outline_follows_the_edges_better_than_corrupted_ones() -> None:
    data = make_noisy_set(40, 64, alpha=0.0, seed=3)
    clean = edge_alignment(data.images, data.clean)
    corrupted = np.stack(simulate_noise(list(data.clean), strong_mixed(1.0), 0).masks)
    worse = edge_alignment(data.images, corrupted)
    assert np.nanmean(clean) > 1.0 > np.nanmean(worse) * 0.9
    auroc = edge_auroc(data.images, data.clean, corrupted)
    assert auroc is not None and auroc > 0.85
    labels = np.r_[np.zeros(40), np.ones(40)]
    assert abs(auroc - roc_auc_score(labels, -np.r_[clean, worse])) < 1e-9


def test_joint_split_needs_groups_that_agree() -> None:
    rng = np.random.default_rng(0)
    net = np.r_[rng.normal(0.2, 0.05, 300), rng.normal(0.7, 0.08, 100)]
    aligned = np.r_[rng.normal(1.5, 0.15, 300), rng.normal(1.0, 0.1, 100)]
    joint = fit_joint(net, aligned, 0, 0.03)
    assert not isinstance(joint, str)
    flagged = joint.clean_prob(net, aligned) <= 0.5
    assert flagged[300:].mean() > 0.95 and flagged[:300].mean() < 0.05
    assert abs(joint.noisy_weight - 0.25) < 0.05
    # A worse-fitting group that follows the edges better is no joint evidence.
    reversed_ = fit_joint(net, np.r_[rng.normal(1.0, 0.1, 300), rng.normal(1.5, 0.15, 100)], 0, 0.03)
    assert isinstance(reversed_, str) and "edges" in reversed_
    assert isinstance(fit_joint(net, np.full(400, np.nan), 0, 0.03), str)


def test_edges_confirm_a_split_of_wrong_masks_and_veto_corrections_that_leave_them() -> None:
    data = make_noisy_set(120, 64, alpha=0.3, seed=5, strength=6)
    predicted = data.clean.copy()
    wrong = np.flatnonzero(~data.corrupted)[:8]  # correct masks on which the network errs
    predicted[wrong] = np.roll(data.clean[wrong], 12, axis=2)
    ev, fetch = run_evidence(data.noisy, predicted, data.images)
    quality, verdict, _ = assess(ev, fetch)
    boundary = quality.boundary
    assert boundary is not None and boundary.used and not boundary.refutes, boundary
    assert boundary.edge_auroc is not None and boundary.edge_auroc >= 0.75
    assert quality.noise_evidence and quality.corrections == "applied", quality.warnings
    assert (verdict.flagged == data.corrupted).mean() >= 0.9
    # The network flags the correct masks it errs on; the joint split keeps them, as their outlines
    # follow the edges, and their "corrections" (shifted off the object) would never be proposed.
    assert ev.flagged[wrong].all() and not verdict.proposed[wrong].any() and boundary.vetoed >= wrong.size
    proposed = np.flatnonzero(verdict.proposed)
    assert proposed.size >= 20 and not (verdict.proposed & ~verdict.flagged).any()
    assert (predicted[proposed] == data.clean[proposed]).all()
    data_out = quality.to_dict()["boundary"]
    assert data_out["used"] is True and data_out["confirmation"] > 0.6


def test_edges_refute_a_split_of_correct_masks_on_hard_images() -> None:
    # Every mask is correct; on a third of the images the network is wrong (it predicts a shifted
    # object), so the network's own split flags them. Their outlines follow the edges: no evidence.
    data = make_noisy_set(120, 64, alpha=0.0, seed=6)
    hard = np.random.default_rng(0).permutation(120)[:40]
    predicted = data.clean.copy()
    predicted[hard] = np.roll(data.clean[hard], 10, axis=1)
    ev, fetch = run_evidence(data.clean, predicted, data.images)
    assert ev.flagged[hard].mean() > 0.9  # the network's split alone would flag the hard images
    quality, verdict, _ = assess(ev, fetch)
    assert quality.boundary is not None and quality.boundary.refutes, quality.boundary
    assert quality.noise_evidence is False and not verdict.flagged.any() and not verdict.proposed.any()
    codes = {w.code: w.message for w in quality.warnings}
    assert "edges" in codes["no_evidence_of_noise"] and quality.corrections == "withheld"
