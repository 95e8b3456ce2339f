"""The newcomer's case: a first upload of 80 or 300 Kvasir-SEG images in which 30 % of the masks are badly
wrong, trained with a named preset, as a new user would start.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 python -m bench.newcomer

The wrong masks are made at the original resolution, as an annotation tool would hand them over: half of
them a box over empty tissue (a rectangle the size of the polyp's bounding box, placed where the polyp is
not), half the polyp dilated by 15-40 px. Images and masks then go through the same preparation as a
job's (``gtcorrect.data.prepare`` at the preset's size) and ``gtcorrect.fit`` with the preset's config.
Figures per run: the share of the wrong masks flagged (boxes and dilations apart), the share of correct
masks among the flagged ones, the precision of the 30 most doubtful masks of the ranking, and whether the
job said "no evidence of noise". Writes ``bench/out/newcomer-*.json`` and the ``newcomer`` section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from bench.common import OUT_DIR, ResultLog, run_all
from bench.kvasir import KVASIR
from bench.report import BENCHMARKS, markdown_table, section, write_section
from gtcorrect.config import TrainConfig, preset_config
from gtcorrect.data import prepare, read_image, read_mask, split_indices
from gtcorrect.trainer import fit
from gtcorrect.types import LabelMap

WRONG_SHARE = 0.3
DILATION_PX = (15.0, 40.0)
TOP = 30


def wrong_masks(masks: list[np.ndarray], seed: int) -> tuple[list[np.ndarray], list[str | None]]:
    """30 % of the masks (H, W) made wrong at their own resolution: alternately a box over empty tissue
    and a dilation of 15-40 px; returns the masks and each one's kind (None: left as drawn)."""
    rng = np.random.default_rng([seed, 31337])
    chosen = rng.permutation(len(masks))[: round(WRONG_SHARE * len(masks))]
    out, kinds = [m.copy() for m in masks], [None] * len(masks)  # type: list[np.ndarray], list[str | None]
    for k, i in enumerate(chosen):
        mask = masks[i] > 0
        if k % 2 == 0:
            out[i], kinds[i] = _box_elsewhere(mask, rng), "box"
        else:
            radius = rng.uniform(*DILATION_PX)
            out[i], kinds[i] = (ndimage.distance_transform_edt(~mask) <= radius).astype(np.int64), "dilation"
    return out, kinds


def _box_elsewhere(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rectangle the size of the object's bounding box (at least a tenth of the image), placed so that
    it does not touch the object."""
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    bh = max(int(rows[-1] - rows[0] + 1) if rows.size else h // 4, h // 10)
    bw = max(int(cols[-1] - cols[0] + 1) if cols.size else w // 4, w // 10)
    bh, bw = min(bh, h // 2), min(bw, w // 2)
    out = np.zeros((h, w), dtype=np.int64)
    for _ in range(200):
        y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        if not mask[y : y + bh, x : x + bw].any():
            break
    out[y : y + bh, x : x + bw] = 1
    return out


def _load(n: int, root: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """The first n images of Kvasir-SEG's fixed training part (``bench.kvasir``), at full size."""
    names = sorted(p.name for p in (root / "images").glob("*.jpg"))
    train, _, _ = split_indices(len(names), (0.7, 0.1, 0.2), seed=0)
    chosen = [names[i] for i in train[:n]]
    images = [read_image(root / "images" / name) for name in chosen]
    masks = [read_mask(root / "masks" / name, num_classes=2, mode="binary") for name in chosen]
    return images, masks, [Path(name).stem for name in chosen]


def run_case(n: int, preset: str, seed: int, root: Path = KVASIR) -> dict[str, Any]:
    images, masks, ids = _load(n, root)
    wrong, kinds = wrong_masks(masks, seed)
    config = TrainConfig.from_dict({**preset_config(preset), "seed": seed})
    data = prepare(images, wrong, ids, label_map=LabelMap(("background", "polyp")), size=config.image_size)
    start = time.perf_counter()
    result = fit(config, data)
    wall = time.perf_counter() - start
    kind = np.array([k or "" for k in kinds])
    truth = kind != ""
    flagged = np.asarray(result.flagged)
    order = np.lexsort((-result.sample_loss, result.clean_prob))  # most doubtful first
    quality = result.quality.to_dict()
    return {
        "wall_s": wall,
        "n": n,
        "preset": preset,
        "n_wrong": int(truth.sum()),
        "recall": float(flagged[truth].mean()),
        "recall_box": float(flagged[kind == "box"].mean()),
        "recall_dilation": float(flagged[kind == "dilation"].mean()),
        "false_flags": float((~truth[flagged]).mean()) if flagged.any() else None,
        "top_precision": float(truth[order[:TOP]].mean()),
        "no_evidence": any(w["code"] == "no_evidence_of_noise" for w in quality["warnings"]),
        "estimated_noise_rate": quality["estimated_noise_rate"],
        "selftest_recall": (quality.get("selftest") or {}).get("recall"),
        "validation_dice": (quality.get("validation") or {}).get("dice"),
        "warnings": [w["code"] for w in quality["warnings"]],
        "corrections": quality["corrections"],
    }


CASES = (("80", 80, "standard"), ("300", 300, "standard"), ("80-quick", 80, "quick"))


def table(runs: dict[str, dict[str, Any]]) -> str:
    head = [
        "images",
        "preset",
        "seeds",
        "wrong masks flagged (target >= 0.80)",
        "boxes / dilations flagged",
        "correct among flagged (<= 0.10)",
        f"precision of the top {TOP} (>= 0.8)",
        "said 'no evidence'",
        "est. noise rate (true 0.30)",
        "self-test recall",
        "wall s",
    ]
    rows = []
    for name, n, preset in CASES:
        recs = [r for k, r in sorted(runs.items()) if k.startswith(f"{name}|")]
        if not recs:
            continue

        def mean(key: str, recs: list[dict[str, Any]] = recs) -> str:
            vals = [r[key] for r in recs if r.get(key) is not None]
            return "–" if not vals else " / ".join(f"{v:.2f}" for v in vals)

        rows.append(
            [
                str(n),
                preset,
                str(len(recs)),
                mean("recall"),
                f"{mean('recall_box')} · {mean('recall_dilation')}",
                mean("false_flags"),
                mean("top_precision"),
                f"{sum(r['no_evidence'] for r in recs)}/{len(recs)}",
                mean("estimated_noise_rate"),
                mean("selftest_recall"),
                " / ".join(f"{r['wall_s']:.0f}" for r in recs),
            ]
        )
    return markdown_table(head, rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.newcomer", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--cases", nargs="+", default=[c[0] for c in CASES], choices=[c[0] for c in CASES])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-markdown", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = args.out or OUT_DIR / f"newcomer-{time.strftime('%Y%m%d-%H%M%S')}.json"
    log = ResultLog(path, {"dataset": "kvasir-seg originals", "wrong_share": WRONG_SHARE})
    jobs = [
        (f"{name}|s{seed}", lambda n=n, preset=preset, seed=seed: run_case(n, preset, seed))
        for name, n, preset in CASES
        if name in args.cases
        for seed in args.seeds
    ]
    run_all(jobs, log, lambda s: print(s, flush=True))
    body = table(log.runs)
    print(body)
    if not args.no_markdown:
        env = "MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184"
        command = f"{env} python -m bench.newcomer {shlex.join(list(sys.argv[1:] if argv is None else argv))}"
        text = section(
            "The newcomer's case: a first upload with badly wrong masks", command, log.data, body, []
        )
        write_section("newcomer", text, BENCHMARKS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
