"""Several masks per image on BU-BIL's real annotators: does the consensus rank the annotators the way
the truth does, and is training on a consensus better than on one annotator or on "latest wins"?

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 python -m bench.consensus

Ranking (no training; ``gtcorrect.consensus.staple`` over reduced masks, ``WORK_SIZE``):
- Dataset 1, 10 experts and the fused gold standard (35 images): Spearman rho between each expert's
  mean Dice against the STAPLE consensus (and STAPLE's sensitivity + specificity - 1) and their mean
  Dice against the gold standard; Dice of the consensus itself against the gold standard.
- Datasets 4-6, 7 crowd workers each: the same rho against each worker's Dice with the pixel majority
  of the *other six* (the dataset has no gold standard aligned with the crops).
Training (plain training, the ``noisy`` method, the BU-BIL schedule, 64 px, seeds 0 and 1): a panel of
the three least-agreeing crowd workers of each dataset; train on the worst one alone, on "latest wins"
(every sample gets the mask of the panel's last worker by slot number, as when batches are uploaded
in that order), on their majority, on their STAPLE consensus, and on every worker's own mask (one drawn
per image and epoch, the STAPLE consensus judged) weighted by their mean Dice against that consensus, as
the service's ``train_on: every_reader`` does, or with equal weights; test against the 7-worker majority.
Writes the section "consensus" of BENCHMARKS.md unless ``--no-markdown``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from bench.bu_bil import BU_BIL, BU_BIL_SCHEDULE, DATASETS, WORKERS, _load_dataset
from bench.common import OUT_DIR, ResultLog, Split, run_all, train_and_score
from bench.plan import RunSpec, make_config
from bench.report import section, write_section
from gtcorrect.consensus import majority, staple
from gtcorrect.data import load_folder, prepare, resize_mask, split_indices
from gtcorrect.metrics import dice
from gtcorrect.types import LabelMap, ReaderMasks

WORK_SIZE = 256
D1 = BU_BIL / "BU-BIL_Dataset1"


def _rank_row(name: str, staple_dice: np.ndarray, youden: np.ndarray, truth: np.ndarray) -> list[str]:
    rho_dice = spearmanr(staple_dice, truth).statistic
    rho_youden = spearmanr(youden, truth).statistic
    worst_true, worst_staple = int(np.argmin(truth)), int(np.argmin(staple_dice))
    return [
        name,
        str(truth.size),
        f"{rho_dice:.2f}",
        f"{rho_youden:.2f}",
        "yes" if worst_true == worst_staple else f"no ({worst_staple + 1} vs {worst_true + 1})",
    ]


def _staple_scores(stacks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per rater: mean Dice against the STAPLE consensus, sensitivity + specificity - 1; the consensus."""
    r = stacks[0].shape[0]
    fit = staple(stacks, [list(range(r))] * len(stacks), r)
    agree = np.array([[dice(s[a], c) for s, c in zip(stacks, fit.labels, strict=True)] for a in range(r)])
    return agree.mean(1), fit.sensitivity() + fit.specificity() - 1.0, fit.labels


def experts_rows() -> tuple[list[list[str]], list[str]]:
    """Dataset 1: ranking row, and the consensus against the gold standard."""
    folders = sorted(p for p in (D1 / "ExpertsAnnotations").iterdir() if p.is_dir())
    raw = D1 / "RawImages"
    kw: dict[str, Any] = {"mask_mode": "binary", "invert": True, "threshold": 127, "mask_prefix": "seg_"}
    _, gold, ids = load_folder(raw, D1 / "GoldStandard", **kw)
    experts = []
    for folder in folders:
        _, masks, names = load_folder(raw, folder, **kw)
        if names != ids:
            raise ValueError(f"{folder}: its images differ from the gold standard's.")
        experts.append(masks)
    small = [
        np.stack([resize_mask(e[i], WORK_SIZE) for e in experts]).astype(np.uint8) for i in range(len(ids))
    ]
    gold_small = [resize_mask(g, WORK_SIZE) for g in gold]
    truth = np.array(
        [[dice(s[a], g) for s, g in zip(small, gold_small, strict=True)] for a in range(len(folders))]
    )
    staple_dice, youden, labels = _staple_scores(small)
    vote = majority(small, 2)
    row = _rank_row(f"Dataset 1 experts ({len(folders)})", staple_dice, youden, truth.mean(1))
    summary = [
        f"Dataset 1, Dice against the gold standard at {WORK_SIZE} px: STAPLE consensus "
        f"{np.mean([dice(c, g) for c, g in zip(labels, gold_small, strict=True)]):.3f}, majority "
        f"{np.mean([dice(c, g) for c, g in zip(vote, gold_small, strict=True)]):.3f}, one expert "
        f"{truth.mean():.3f} on average (best {truth.mean(1).max():.3f}, worst {truth.mean(1).min():.3f})."
    ]
    return [row], summary


def crowd_rows() -> list[list[str]]:
    rows = []
    for d in DATASETS:
        _, workers, ids = _load_dataset(BU_BIL, d)
        stacks = [np.stack([w[i] for w in workers]).astype(np.uint8) for i in range(len(ids))]
        loo = np.zeros((WORKERS, len(ids)))
        for a in range(WORKERS):
            others = [np.delete(s, a, 0) for s in stacks]
            ref = majority(others, 2)  # 6 voters: foreground needs 4
            loo[a] = [dice(s[a], m) for s, m in zip(stacks, ref, strict=True)]
        staple_dice, youden, _ = _staple_scores(stacks)
        rows.append(_rank_row(f"Dataset {d} crowd ({WORKERS})", staple_dice, youden, loo.mean(1)))
    return rows


@dataclasses.dataclass
class Panel:
    """Training masks at size S of every 3-worker variant, the split (7-worker majority as truth)."""

    split: Split
    given: dict[str, np.ndarray]
    workers: dict[str, list[int]]
    # Variants that learn from every worker's mask and judge the STAPLE consensus: their readers' masks.
    readers: dict[str, ReaderMasks]


def panel(size: int, n_train: int) -> Panel:
    lm = LabelMap(("background", "cell"))
    images: list[np.ndarray] = []
    reference: list[np.ndarray] = []
    variants: dict[str, list[np.ndarray]] = {
        "worst": [],
        "latest wins": [],
        "majority of 3": [],
        "STAPLE of 3": [],
    }
    ids: list[str] = []
    chosen: dict[str, list[int]] = {}
    three_masks: list[np.ndarray] = []  # per image, the panel's three masks (3, H, W)
    weights: list[list[float]] = []
    for d in DATASETS:
        imgs, workers, names = _load_dataset(BU_BIL, d)
        stacks = [np.stack([w[i] for w in workers]) for i in range(len(names))]
        ref = [(s.sum(0) * 2 > WORKERS).astype(np.int64) for s in stacks]
        agreement = np.array([[dice(w[i], ref[i]) for i in range(len(names))] for w in workers]).mean(1)
        three = sorted(np.argsort(agreement)[:3].tolist())  # the three least-agreeing, by slot number
        chosen[f"Dataset{d}"] = [k + 1 for k in three]
        sub = [s[three].astype(np.uint8) for s in stacks]
        fit = staple(sub, [[0, 1, 2]] * len(sub), 3)
        variants["worst"] += [workers[int(np.argmin(agreement))][i] for i in range(len(names))]
        variants["latest wins"] += [s[2].astype(np.int64) for s in sub]
        variants["majority of 3"] += majority(sub, 2)
        variants["STAPLE of 3"] += fit.labels
        # each worker's weight as the service gives it: their mean Dice against the consensus
        weight = [
            float(np.mean([dice(m[r], c) for m, c in zip(sub, fit.labels, strict=True)])) for r in range(3)
        ]
        three_masks += sub
        weights += [weight] * len(sub)
        images += imgs
        reference += ref
        ids += names
    data = prepare(images, reference, ids, label_map=lm, size=size, channels=1)
    train, val, test = split_indices(len(ids), (0.7, 0.1, 0.2), seed=0)
    train = train[:n_train]
    split = Split(
        f"bu-bil-panel-{size}",
        data.images[train],
        data.masks[train],
        [ids[i] for i in train],
        data.images[val],
        data.masks[val],
        data.images[test],
        data.masks[test],
    )
    given = {
        name: prepare(images, masks, ids, label_map=lm, size=size, channels=1).masks[train]
        for name, masks in variants.items()
    }
    small = [np.stack([resize_mask(m, size) for m in three_masks[i]]) for i in train]
    readers = {
        "every worker of 3, weighted": ReaderMasks.of(small, [weights[i] for i in train]),
        "every worker of 3, equal weights": ReaderMasks.of(small, [[1.0] * 3 for _ in train]),
    }
    for name in readers:
        given[name] = given["STAPLE of 3"]
    return Panel(split, given, chosen, readers)


def train_rows(p: Panel, seeds: Sequence[int], log: ResultLog, device: str) -> list[list[str]]:
    jobs = []
    for name, given in p.given.items():
        for seed in seeds:
            spec = RunSpec(name.replace(" ", "-"), 0.0, "noisy", "default", seed)

            def go(spec: RunSpec = spec, given: np.ndarray = given, name: str = name) -> dict[str, Any]:
                config = make_config(spec, BU_BIL_SCHEDULE, p.split.size)
                split = dataclasses.replace(p.split, train_readers=p.readers.get(name))
                record = train_and_score(config, split, given, None, device)
                learnt = list(zip(given, p.split.train_masks, strict=True))
                if split.train_readers is not None:  # the workers' own masks, not the consensus judged
                    r = split.train_readers
                    learnt = [(m, p.split.train_masks[o]) for m, o in zip(r.masks, r.owner, strict=True)]
                record["given_dice"] = float(np.mean([dice(g, t) for g, t in learnt]))
                return record

            jobs.append((spec.key, go))
    run_all(jobs, log, lambda s: print(s, flush=True))  # noqa: T201 (progress of a command-line tool)
    rows = []
    for name in p.given:
        recs = [log.runs[RunSpec(name.replace(" ", "-"), 0.0, "noisy", "default", s).key] for s in seeds]
        test = np.array([r["test"]["dice"] for r in recs])
        rows.append(
            [name, f"{recs[0]['given_dice']:.3f}", f"{test.mean():.3f} ± {test.std():.3f}", str(len(recs))]
        )
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.consensus", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--out", type=Path, default=OUT_DIR / "consensus.json", help="JSON log (its runs are skipped)"
    )
    p.add_argument("--no-markdown", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    experts, summary = experts_rows()
    ranking = _table(
        ["annotators", "n", "rho: Dice vs STAPLE", "rho: sens + spec - 1", "least reliable named"],
        experts + crowd_rows(),
    )
    pan = panel(args.size, BU_BIL_SCHEDULE.n_train)
    log = ResultLog(
        args.out, {"dataset": pan.split.name, "size": args.size, **dataclasses.asdict(BU_BIL_SCHEDULE)}
    )
    training = _table(
        ["training masks", "Dice vs 7-worker majority", "test Dice", "seeds"],
        train_rows(pan, args.seeds, log, args.device),
    )
    panels = ", ".join(f"{k} workers {v}" for k, v in pan.workers.items())
    body = (
        f"{ranking}\n\n{' '.join(summary)}\n\nTraining on a panel of three crowd workers per dataset "
        f"({panels}), plain training, test against the 7-worker majority:\n\n{training}"
    )
    print(body)  # noqa: T201
    if not args.no_markdown:
        command = (
            "MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 python -m bench.consensus"
        )
        write_section(
            "consensus", section("BU-BIL: several annotators per image (consensus)", command, log.data, body)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
