"""BU-BIL real-annotator experiment (``python -m bench.quality --bu-bil``).

Data: the crowd sets of Datasets 4-6 (154 cell crops, 7 Mechanical Turk workers each, aligned with the
raw crops; ../shared/data/bu-bil/MANIFEST.md). Cells are black in the masks: foreground is grey
<= 127 (``read_mask(mode="binary", invert=True)``); masks pair as ``X.png`` <-> ``seg_X.png`` without
regard to case. Reference: the consensus, the pixel majority (>= 4 of 7) of the workers, at the
original size. The noisy annotator: per dataset, the worker slot with the lowest mean Dice against the
consensus (slot numbers do not name the same person across datasets, so the worst is picked in each).
Noisy images: training masks whose Dice against the consensus is below ``NOISY_DICE`` (0.8).
Shape legend: N images, S the training size (64 by default).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import OUT_DIR, SHARED_DATA, ResultLog, Split, run_all, train_and_score
from bench.plan import ALL_METHODS, SCHEDULES, RunSpec, Schedule, make_config
from bench.report import quality_table, section, table, write_section
from gtcorrect.data import load_folder, prepare, split_indices
from gtcorrect.metrics import dice
from gtcorrect.types import LabelMap

BU_BIL = SHARED_DATA / "bu-bil"
DATASETS = (4, 5, 6)
WORKERS = 7
NOISY_DICE = 0.8
# All 108 training crops, 64 px; the same phase lengths as the Kvasir default schedule.
BU_BIL_SCHEDULE = dataclasses.replace(SCHEDULES["default"], n_train=108)


@dataclasses.dataclass
class CrowdSet:
    """images: N (H, W, C) uint8; consensus, worst: N (H, W) int64; worst_dice: (N,) float."""

    images: list[np.ndarray]
    consensus: list[np.ndarray]
    worst: list[np.ndarray]
    worst_dice: np.ndarray
    ids: list[str]
    chosen: dict[str, dict[str, float]]  # dataset -> worker slot and its mean Dice vs consensus


def _load_dataset(root: Path, d: int) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[str]]:
    base = root / f"BU-BIL_Dataset{d}"
    images: list[np.ndarray] = []
    workers: list[list[np.ndarray]] = []
    ids: list[str] = []
    for k in range(1, WORKERS + 1):
        folder = base / "CrowdsourcedAnnotations" / f"mturk_annotation{d}-{k}"
        imgs, masks, names = load_folder(
            base / "RawImages", folder, mask_mode="binary", invert=True, threshold=127, mask_prefix="seg_"
        )
        if ids and names != ids:
            raise ValueError(f"{folder}: its images differ from worker 1's ({len(names)} vs {len(ids)}).")
        images, ids = imgs, names
        workers.append(masks)
    return images, workers, [f"D{d}/{i}" for i in ids]


def load_crowd(root: Path = BU_BIL) -> CrowdSet:
    """Read Datasets 4-6, build the consensus and pick each dataset's worst-agreeing worker."""
    out = CrowdSet([], [], [], np.zeros(0), [], {})
    worst_dice: list[float] = []
    for d in DATASETS:
        images, workers, ids = _load_dataset(root, d)
        stack = [np.stack([w[i] for w in workers]) for i in range(len(ids))]  # (7, H, W) per image
        consensus = [(s.sum(0) * 2 > WORKERS).astype(np.int64) for s in stack]
        agreement = np.array([[dice(w[i], consensus[i]) for i in range(len(ids))] for w in workers])
        k = int(agreement.mean(1).argmin())
        out.chosen[f"Dataset{d}"] = {"worker": k + 1, "mean_dice_vs_consensus": float(agreement[k].mean())}
        out.images += images
        out.consensus += consensus
        out.worst += workers[k]
        worst_dice += agreement[k].tolist()
        out.ids += ids
    out.worst_dice = np.array(worst_dice)
    return out


def crowd_split(crowd: CrowdSet, size: int, n_train: int) -> tuple[Split, np.ndarray, np.ndarray]:
    """Split 154 crops 108/15/31 (seed 0). Returns the split (consensus masks), the worst worker's
    training masks (N, S, S) and which of them are noisy (N,) bool (Dice vs consensus < 0.8)."""
    lm = LabelMap(("background", "cell"))
    data = prepare(crowd.images, crowd.consensus, crowd.ids, label_map=lm, size=size, channels=1)
    worst = prepare(crowd.images, crowd.worst, crowd.ids, label_map=lm, size=size, channels=1).masks
    train, val, test = split_indices(len(crowd.ids), (0.7, 0.1, 0.2), seed=0)
    train = train[:n_train]
    split = Split(
        f"bu-bil-crowd-{size}",
        data.images[train],
        data.masks[train],
        [crowd.ids[i] for i in train],
        data.images[val],
        data.masks[val],
        data.images[test],
        data.masks[test],
    )
    return split, worst[train], crowd.worst_dice[train] < NOISY_DICE


def run_bu_bil(
    crowd: CrowdSet,
    size: int,
    schedule: Schedule,
    seeds: Sequence[int],
    methods: Sequence[str],
    log: ResultLog,
    device: str,
) -> float:
    """Train every method on the worst worker's masks (``clean``: on the consensus) and score them."""
    split, worst, truth = crowd_split(crowd, size, schedule.n_train)
    rate = round(float(truth.mean()), 2)
    pixel = 1.0 - crowd.worst_dice[np.isin(crowd.ids, split.train_ids)]
    noise = {
        "mean_pixel_noise": float(pixel[truth].mean()) if truth.any() else None,
        "mean_pixel_noise_all": float(pixel.mean()),
        "n_corrupted": int(truth.sum()),
        "threshold_dice": NOISY_DICE,
        "chosen": crowd.chosen,
    }
    jobs = []
    for seed in seeds:
        for method in methods:
            spec = RunSpec("crowd-worst", rate, method, "default", seed)
            given = split.train_masks if method == "clean" else worst

            def go(spec: RunSpec = spec, given: np.ndarray = given) -> dict[str, Any]:
                config = make_config(spec, schedule, size)
                record = train_and_score(config, split, given, truth, device)
                record.update(spec=dataclasses.asdict(spec), noise=noise, config=config.to_dict())
                return record

            jobs.append((spec.key, go))
    run_all(jobs, log, lambda s: print(s, flush=True))
    return rate


def main_bu_bil(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from bench.quality import _command, _rel

    size = args.size or 64
    schedule = SCHEDULES[args.schedule] if args.schedule else BU_BIL_SCHEDULE
    if args.n_train:
        schedule = dataclasses.replace(schedule, n_train=args.n_train)
    crowd = load_crowd()
    settings = {"dataset": f"bu-bil-crowd-{size}", "size": size, **dataclasses.asdict(schedule)}
    path = args.resume or args.out or OUT_DIR / "quality-bu-bil.json"
    log = ResultLog(path, settings)
    methods = args.methods or ALL_METHODS
    rate = run_bu_bil(crowd, size, schedule, args.seeds, methods, log, args.device)
    keys = {RunSpec("crowd-worst", rate, m, "default", s).key for s in args.seeds for m in methods}
    runs = {k: v for k, v in log.runs.items() if k in keys}
    body = table(runs)
    assessed = quality_table(runs)
    if assessed:
        title = "Self-assessment against the truth (means over seeds; 'k/n': in k of n seeds)"
        body += f"\n\n{title}:\n\n{assessed}"
    print(body)
    if not args.no_markdown:
        chosen = ", ".join(
            f"{k} worker {int(v['worker'])} (Dice {v['mean_dice_vs_consensus']:.3f})"
            for k, v in crowd.chosen.items()
        )
        notes = [
            f"JSON: `{_rel(path)}`. Train on the worst-agreeing crowd worker of each dataset ({chosen}); "
            f"test against the 7-worker pixel-majority consensus at {size} px. 'alpha' is the share of "
            f"training masks with Dice < {NOISY_DICE} against the consensus (= noisy for recognition); "
            "'clean' trains on the consensus.",
        ]
        name = "bu-bil" if args.section in ("default", "custom") else args.section
        title = "BU-BIL crowd (real annotators)" + ("" if name == "bu-bil" else f": {name}")
        text = section(title, _command(argv, path), log.data, body, notes)
        write_section(f"quality-{name}", text, args.benchmarks)
    return 0
