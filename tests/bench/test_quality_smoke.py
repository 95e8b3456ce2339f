"""Smoke tests of the quality benchmark harness on tiny synthetic images (seconds, real training)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.bu_bil import BU_BIL, NOISY_DICE, crowd_split, load_crowd
from bench.common import ResultLog, per_sample, recognition_by_size, synthetic_split
from bench.evidence import evidence_rows
from bench.evidence import table as evidence_table
from bench.lidc import corrections_note
from bench.plan import RunSpec, Schedule, expand
from bench.quality import main, make_noise
from bench.report import mean_std, table, write_section
from bench.tail import main as tail_main
from gtcorrect.losses import SAMPLE_LOSS_KINDS


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _run(tmp_path: Path, *extra: str) -> tuple[dict, str]:
    out, md = tmp_path / "q.json", tmp_path / "B.md"
    argv = ["--smoke", "--regimes", "strong", "--alphas", "0.5", "--methods", "noisy", "gt"]
    argv += ["--out", str(out), "--benchmarks", str(md), *extra]
    assert main(argv) == 0
    return json.loads(out.read_text()), md.read_text()


def test_smoke_run_records_every_figure_and_writes_the_table(tmp_path: Path) -> None:
    log, md = _run(tmp_path)
    runs = log["runs"]
    assert sorted(runs) == ["strong|a0.5|gt|default|s0", "strong|a0.5|noisy|default|s0"]
    gt, noisy = runs["strong|a0.5|gt|default|s0"], runs["strong|a0.5|noisy|default|s0"]
    for rec in (gt, noisy):
        assert 0.5 < rec["test"]["dice"] <= 1.0  # ellipses are learnt within 3 epochs
        assert rec["test"]["iou"] < rec["test"]["dice"]
        assert rec["wall_s"] > 0 and rec["noise"]["n_corrupted"] == 12  # half of 24 training masks
        assert 0.0 < rec["noise"]["mean_pixel_noise"] < 1.0
    assert noisy["recognition"] is None and noisy["correction"] is None
    rec = gt["recognition"]
    assert 0.0 <= rec["accuracy"] <= 1.0 and 0.0 <= rec["auroc"] <= 1.0
    assert rec["true_noise_rate"] == 0.5
    assert rec["estimated_noise_rate"] == gt["n_flagged"] / 24
    assert gt["rounds"] and all("separation" in r for r in gt["rounds"])
    by_type = gt["recognition_by_type"]
    assert sum(t["n"] for t in by_type.values()) == 12
    assert {k: t["n"] for k, t in by_type.items()} == {k: v["n"] for k, v in gt["noise"]["by_type"].items()}
    flagged_noisy = sum(t["recall"] * t["n"] for t in by_type.values())
    assert flagged_noisy == pytest.approx(rec["recall"] * 12)  # the types split the noisy masks
    assert all(0.0 <= t["auroc"] <= 1.0 for t in by_type.values())
    assert "recognition_by_type" not in noisy  # plain training has no split
    by_damage = gt["recognition_by_damage"]  # the noisy masks again, by their Dice with the truth
    assert set(by_damage) == {"badly wrong", "mild"} and sum(b["n"] for b in by_damage.values()) == 12
    flagged_by_damage = sum(b["recall"] * b["n"] for b in by_damage.values() if b["n"])
    assert flagged_by_damage == pytest.approx(rec["recall"] * 12)
    plain_bins = noisy["recognition_by_size"]
    assert all(b["auroc"] is None and b["pred_area_ratio"] > 0.0 for b in plain_bins)
    by_size = gt["recognition_by_size"]
    assert len(by_size) == 5
    assert [b["area_min"] for b in by_size[1:]] == [b["area_max"] for b in by_size[:-1]]
    assert all(0.0 <= b["clean_flagged"] <= 1.0 and b["pred_area_ratio"] > 0.0 for b in by_size)
    # Every correction the T stage made (for its own flags; the final split may differ, gtcorrect.quality).
    corr = gt["correction"]
    assert 0 < corr["n_corrected"] <= 24 and 0.0 <= corr["dice_corrected"] <= 1.0
    true_pos = gt["correction_true_noisy"]
    assert 0 < true_pos["n_corrected"] <= corr["n_corrected"]
    report = {a["annotator"]: a for a in gt["annotators"]}
    assert report["noisy"]["n_masks"] == 12 and report["clean"]["n_masks"] == 12
    assert true_pos["dice_noisy"] < 1.0  # only corrupted masks are in this subset
    assert gt["config"]["method"] == "gt" and gt["config"]["image_size"] == 32
    assert log["machine"]["cpu_count"] >= 1 and log["settings"]["n_train"] == 24
    assert "<!-- quality-smoke:start -->" in md and "<!-- quality-smoke:end -->" in md
    assert "| strong | 0.5 | gt | default | 1 |" in md
    assert "Recognition by corruption type" in md and "recall / AUROC / pixel noise" in md
    assert "Recognition by object size" in md
    assert "Recognition by damage" in md and "badly wrong: n / recall / AUROC" in md
    assert "Annotator report" in md
    assert "MALLOC_MMAP_THRESHOLD_=4294967296" in md and "--smoke" in md
    per = gt["per_sample"]
    assert len(per["kept_score"]) == len(per["dice_predicted"]) == len(per["held_out"])
    assert all(0.0 <= d <= 1.0 for d in per["dice_predicted"])


def test_tail_table_counts_the_masks_far_above_the_median(tmp_path: Path) -> None:
    log = {
        "settings": {"dataset": "toy"},
        "runs": {
            "strong|a0.5|gt|default|s0": {
                "per_sample": {
                    "held_out": [0] * 10 + [1],
                    "noisy": [0] * 8 + [1, 1, 0],
                    "kept_score": [0.0, 0.01, -0.01, 0.02, -0.02, 0.0, 0.01, -0.01, 0.5, 0.01, 9.0],
                    "dice_given": [1.0] * 8 + [0.4, 0.5, 1.0],
                    "dice_predicted": [0.9] * 8 + [0.8, 0.9, 0.1],
                },
                "quality": {"separation": 0.9, "calibration": {"edge_auroc": 0.6}},
            }
        },
    }
    path = tmp_path / "log.json"
    path.write_text(json.dumps(log))
    md = tmp_path / "B.md"
    assert tail_main([str(path), "--benchmarks", str(md)]) == 0
    text = md.read_text()
    # One training mask (0.5) is far out; the held-back 9.0 is not counted; 1 of 2 wrong masks.
    assert "| toy | strong | 0.5 | 0 | 10 | 2 | 1 (1 wrong) | 0.400 → 0.800 | 0.90 | 0.60 |" in text


def test_resume_skips_runs_in_the_log_and_refuses_other_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = _run(tmp_path)
    capsys.readouterr()
    out = tmp_path / "q.json"
    assert (
        main(
            [
                "--smoke",
                "--regimes",
                "strong",
                "--alphas",
                "0.5",
                "--methods",
                "noisy",
                "gt",
                "--resume",
                str(out),
                "--no-markdown",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.count("in the log, skipped") == 2
    assert json.loads(out.read_text())["runs"] == first["runs"]
    with pytest.raises(ValueError, match="settings differ"):
        main(["--smoke", "--n-train", "16", "--resume", str(out), "--no-markdown"])


def test_noise_corrupts_alpha_of_the_training_masks_only() -> None:
    split = synthetic_split(20, 4, 4, size=32)
    noisy = make_noise(split, "systematic", 0.5, seed=3)
    changed = np.array(
        [not np.array_equal(a, b) for a, b in zip(noisy.masks, split.train_masks, strict=True)]
    )
    assert changed.sum() == 10 and np.array_equal(changed, noisy.truth)
    # Systematic noise dilates: every corrupted mask grows.
    assert all(noisy.masks[i].sum() > split.train_masks[i].sum() for i in np.flatnonzero(changed))
    clean = make_noise(split, "strong", 0.0, seed=3)
    assert not clean.truth.any() and np.array_equal(clean.masks, split.train_masks)
    with pytest.raises(ValueError, match="unknown noise regime 'heavy'"):
        make_noise(split, "heavy", 0.5, seed=0)


def test_grid_shares_noise_free_runs() -> None:
    runs = expand(["strong", "systematic"], [0.0, 0.5], ["clean", "noisy", "gt"], [0, 1], ["soft"])
    keys = {r.key for r in runs}
    assert "none|a0|clean|default|s0" in keys and "none|a0|gt|default|s1" in keys
    assert not any(k.startswith("strong|a0|") for k in keys)
    assert {"strong|a0.5|gt|soft|s0", "systematic|a0.5|gt|soft|s1"} <= keys
    # per seed: clean, gt@0, and (noisy, gt, gt-soft) for each of 2 regimes
    assert len(runs) == 2 * (2 + 2 * 3)
    with pytest.raises(ValueError, match="longest schedule is 5 epochs but the baselines get 4"):
        Schedule(n_train=8, epochs=4, warmup=2, rounds_max=1, epochs_per_round=1, t_epochs=2)


def test_table_aggregates_seeds_and_sections_are_replaced(tmp_path: Path) -> None:
    assert mean_std([0.5, 0.7]) == "0.600 ± 0.141"
    assert mean_std([0.5, None]) == "0.500" and mean_std([None]) == "–"
    spec = RunSpec("strong", 0.5, "noisy", "default", 0)
    runs = {
        f"k{s}": {"spec": {**spec.__dict__, "seed": s}, "test": {"dice": d}, "wall_s": 10.0}
        for s, d in ((0, 0.5), (1, 0.7))
    }
    text = table(runs)
    assert "| strong | 0.5 | noisy | default | 2 | 0.600 ± 0.141 |" in text
    md = tmp_path / "B.md"
    md.write_text("# Title\n\nkept\n")
    write_section("x", "one", md)
    write_section("x", "two", md)
    body = md.read_text()
    assert body.startswith("# Title\n\nkept\n") and "two" in body and "one" not in body


def test_log_rejects_a_file_with_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    ResultLog(path, {"size": 32}).add("k", {"x": 1})
    assert ResultLog(path, {"size": 32}).has("k")
    with pytest.raises(ValueError, match=str(path)):
        ResultLog(path, {"size": 64})


@pytest.mark.skipif(not BU_BIL.is_dir(), reason=f"BU-BIL data not present at {BU_BIL}")
def test_bu_bil_crowd_consensus_and_worst_worker() -> None:
    crowd = load_crowd()
    assert len(crowd.ids) == 154 and set(crowd.chosen) == {"Dataset4", "Dataset5", "Dataset6"}
    assert all(1 <= v["worker"] <= 7 and 0.5 < v["mean_dice_vs_consensus"] < 1 for v in crowd.chosen.values())
    split, worst, truth = crowd_split(crowd, 32, 108)
    assert split.train_images.shape == (108, 1, 32, 32) and split.test_masks.shape == (31, 32, 32)
    assert worst.shape == (108, 32, 32) and truth.dtype == bool
    train = np.isin(crowd.ids, split.train_ids)
    assert truth.sum() == int((crowd.worst_dice[train] < NOISY_DICE).sum()) > 0


def test_evidence_scores_every_kind_at_the_chosen_epochs() -> None:
    split = synthetic_split(32, 4, 4)
    noisy = make_noise(split, "strong", 0.5, seed=0)
    rows = evidence_rows(split.train_images, noisy.masks, noisy.truth, [2, 4], seed=0)
    assert len(rows) == 2 * len(SAMPLE_LOSS_KINDS) * 2
    assert {(r["epoch"], r["score"], r["transform"]) for r in rows} == {
        (e, k, t) for e in (2, 4) for k in SAMPLE_LOSS_KINDS for t in ("none", "log")
    }
    # On ellipses with half the masks strongly corrupted, the difficulty-normalised score ranks them.
    excess = [r for r in rows if r["epoch"] == 4 and r["score"] == "excess"]
    assert all(float(r["auroc"]) > 0.75 for r in excess), excess  # type: ignore[arg-type]
    body = evidence_table(rows)
    assert body.count("\n") == 1 + 2 * len(SAMPLE_LOSS_KINDS)
    assert "| 4 | excess |" in body


def test_recognition_by_size_bins_by_true_area_and_measures_under_segmentation() -> None:
    n = 10
    clean = np.zeros((n, 8, 8), dtype=np.int64)
    for i in range(n):
        clean[i, : 1 + i // 2, :4] = 1  # areas 4, 4, 8, 8, ..., 20, 20: two images per bin
    pred = clean.copy()
    pred[:, :, 2:] = 0  # the model finds half of every object
    truth = np.array([True, False] * 5)
    result = SimpleNamespace(flagged=truth.copy(), clean_prob=np.where(truth, 0.1, 0.9))
    result.flagged[1] = True  # one clean mask of the smallest objects flagged
    bins = recognition_by_size(truth, result, clean, pred)  # type: ignore[arg-type]
    assert [(b["area_min"], b["area_max"]) for b in bins][0] == (4.0, 7.2)
    assert [b["clean_flagged"] for b in bins] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert all(b["recall"] == 1.0 and b["pred_area_ratio"] == 0.5 for b in bins)
    assert all(b["auroc"] == 1.0 for b in bins)  # the scores rank every noisy mask first


def test_corrections_are_measured_against_a_second_reference_where_it_has_foreground() -> None:
    # Three masks: the first corrected toward the reference, the second corrected away from it, the third
    # without a reference (no other reader marked it); nothing else corrected.
    given = np.zeros((4, 8, 8), dtype=np.int64)
    given[:, :4, :4] = 1
    reference = np.zeros_like(given)
    reference[0, :4, :] = 1
    reference[1, :4, :4] = 1
    toward, away = reference[0].copy(), np.zeros((8, 8), dtype=np.int64)
    away[4:, 4:] = 1
    result = SimpleNamespace(
        withheld={},
        corrected={0: toward, 1: away, 2: away},
        held_out=np.zeros(4, dtype=bool),
        sample_loss=np.zeros(4),
        clean_prob=np.ones(4),
        flagged=np.array([True, True, True, False]),
        predicted=None,
    )
    per = per_sample(result, given, given, None, reference=reference)  # type: ignore[arg-type]
    assert per["dice_given_reference"] == [pytest.approx(2 / 3, abs=1e-4), 1.0, None, None]
    assert per["dice_corrected_reference"] == [1.0, 0.0, None, None]
    note = corrections_note({"per_sample": per, "spec": {"seed": 3}})
    assert note == (
        "Seed 3: 3 corrections handed back; on the 2 nodules at least two other readers marked, Dice with "
        "their majority 0.833 -> 0.500 (1 closer, 1 further)."
    )
    assert corrections_note({"per_sample": {**per, "proposed": [0, 0, 0, 0]}, "spec": {"seed": 3}}) is None
