"""A 3D network on the MSD hippocampus volumes: what the engine's slice-wise training leaves on the table.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 python -m bench.hippocampus3d

The engine trains 2D networks and cuts volumes into slices (``bench.hippocampus``). Before a 3D path is
built through the G-T method, this measures what a 3D network gains on clean masks: the engine's own
U-Net configuration (``NetConfig``: MONAI's residual ``UNet``) with ``spatial_dims=3``, trained plainly on
whole volumes (Dice + cross-entropy, Adam at the engine's learning rate, random mirroring along every
axis, the last step's weights kept), on the same split by volume as ``bench.hippocampus``
(``split_indices(195, (0.7, 0.1, 0.2), seed=0)``, the first ``--volumes`` of the 136 training volumes).

Each volume is windowed to 8 bit with its own 0.5-99.5 % percentiles (``gtcorrect.volumes.window``, as a
job does), z-scored, and padded with black to ``BOX`` (every volume of the task fits; four halvings of
each side). Test Dice is per volume and per label at the volume's own voxels (the padding cropped away),
mean over the test volumes that have the label: the figure the published range (about 0.88-0.90, nnU-Net)
is given in. Writes ``bench/out/hippocampus3d-*.json`` and the ``hippocampus-3d`` section of BENCHMARKS.md.
Shape legend: V volumes, X, Y, Z voxels.
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
from monai.losses import DiceCELoss

from bench.common import OUT_DIR, ResultLog, run_all
from bench.hippocampus import HIPPOCAMPUS, LABELS, TRAIN_VOLUMES
from bench.report import BENCHMARKS, markdown_table, section, write_section
from gtcorrect import volumes
from gtcorrect.config import NetConfig, TrainConfig
from gtcorrect.data import split_indices
from gtcorrect.evidence import class_disagreement
from gtcorrect.networks import build_network, view_probs

BOX = (48, 64, 48)  # every MSD hippocampus volume (at most 43 x 58 x 47) fits
STEPS = 3000  # optimizer steps of BATCH volumes
BATCH = 2
MIRROR = (0, 1, 2)  # spatial axes mirrored at random in training


def load_volumes(root: Path = HIPPOCAMPUS) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Every image volume windowed to uint8 (X, Y, Z), its label volume (X, Y, Z) uint8 and its name, in
    the order of ``bench.hippocampus`` (sorted file names)."""
    paths = sorted(p for p in (root / "images").glob("*") if volumes.is_volume(p))
    if not paths:
        raise ValueError(f"{root / 'images'}: no .nii.gz volumes found (is this the hippocampus folder?).")
    images, labels, names = [], [], []
    for path in paths:
        image, label = volumes.read_volume(path), volumes.read_volume(root / "labels" / path.name)
        images.append(volumes.window(image.data))
        labels.append(np.round(label.data).astype(np.uint8))
        names.append(image.name)
    return images, labels, names


def padded(image: np.ndarray, box: tuple[int, ...] = BOX) -> tuple[np.ndarray, tuple[slice, ...]]:
    """A windowed volume (X, Y, Z) z-scored and padded with black to ``box``: (1, *box) float32 and where
    the volume sits in it."""
    if any(s > b for s, b in zip(image.shape, box, strict=True)):
        raise ValueError(f"a volume of {image.shape} does not fit the box {box}.")
    grey = image.astype(np.float32) / 255.0
    mean, std = float(grey.mean()), max(float(grey.std()), 1e-6)
    out = np.full(box, (0.0 - mean) / std, dtype=np.float32)
    at = tuple(slice((b - s) // 2, (b - s) // 2 + s) for s, b in zip(image.shape, box, strict=True))
    out[at] = (grey - mean) / std
    return out[None], at


def padded_labels(label: np.ndarray, at: tuple[slice, ...], box: tuple[int, ...] = BOX) -> np.ndarray:
    out = np.zeros(box, dtype=np.int64)
    out[at] = label
    return out


def volume_dice(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(K - 1,) Dice per foreground class of one volume (X, Y, Z), NaN where neither has the class."""
    flat = (pred.reshape(1, pred.shape[0], -1), truth.reshape(1, truth.shape[0], -1))
    return np.asarray(1.0 - class_disagreement(*flat, num_classes)[0])


def mirrored(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, axes: Sequence[int] = MIRROR
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch (B, 1, *box) and its labels (B, *box), mirrored along each of ``axes`` with probability
    1/2."""
    for axis in axes:
        if bool(torch.rand((), generator=generator) < 0.5):
            x, y = x.flip(2 + axis), y.flip(1 + axis)
    return x, y


def mirrorings(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every mirroring of a batch (B, K, X, Y, Z) along a subset of the spatial ``axes`` (those trained
    with), as the tensor dims to flip; the first flips none."""
    return [tuple(2 + a for j, a in enumerate(axes) if k >> j & 1) for k in range(2 ** len(axes))]


def run_3d(
    seed: int,
    train_volumes: int,
    steps: int = STEPS,
    root: Path = HIPPOCAMPUS,
    net: NetConfig | None = None,
    box: tuple[int, ...] = BOX,
    mirror: Sequence[int] = MIRROR,
    decay: bool = False,
) -> dict[str, Any]:
    """Train the 3D U-Net on the first ``train_volumes`` training volumes (clean labels) for ``steps``
    steps (``decay``: the learning rate falls to 0 as (1 - step / steps) ** 0.9, nnU-Net's schedule) and
    return its test Dice per volume and label, alone and averaged over the mirrorings of each test
    volume along the axes it was mirrored along in training (8 for all three), and the wall time."""
    images, labels, _ = load_volumes(root)
    train_v, _val_v, test_v = split_indices(len(images), (0.7, 0.1, 0.2), seed=0)
    train_v = train_v[:train_volumes]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    order = np.random.default_rng([seed, 3]).permutation
    placed = [padded(images[i], box) for i in range(len(images))]
    xs = torch.from_numpy(np.stack([placed[i][0] for i in train_v]))
    ys = torch.from_numpy(np.stack([padded_labels(labels[i], placed[i][1], box) for i in train_v]))
    config = TrainConfig()
    model = build_network(net or config.net, 1, LABELS.num_classes, spatial_dims=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    start = time.perf_counter()
    queue: list[int] = []
    model.train()
    for step in range(steps):
        if decay:
            for group in optimizer.param_groups:
                group["lr"] = config.lr * (1.0 - step / steps) ** 0.9
        if len(queue) < BATCH:
            queue += order(len(train_v)).tolist()
        batch, queue = queue[:BATCH], queue[BATCH:]
        x, y = mirrored(xs[batch], ys[batch], generator, mirror)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y[:, None])
        loss.backward()
        optimizer.step()
    wall = time.perf_counter() - start
    model.eval()
    alone: list[np.ndarray] = []
    mirrored_views: list[np.ndarray] = []
    with torch.no_grad():
        for i in test_v:
            x, at = placed[i]
            volume, views = torch.from_numpy(x[None]), mirrorings(mirror)
            for n, out in ((1, alone), (len(views), mirrored_views)):
                probs = view_probs(model, volume, n, views)
                out.append(volume_dice(probs.argmax(1)[0].numpy()[at], labels[i], LABELS.num_classes))
    return {
        "seed": seed,
        "train_volumes": len(train_v),
        "test_volumes": len(test_v),
        "steps": steps,
        "decay": decay,
        "test_per_volume": _mean_per_label(alone),
        "test_per_volume_mirrored": _mean_per_label(mirrored_views),
        "wall_s": wall,
    }


def _mean_per_label(per_volume: list[np.ndarray]) -> dict[str, float]:
    """Mean Dice per foreground label over the volumes that have it."""
    per = np.array(per_volume)
    return {LABELS.names[c + 1]: float(np.nanmean(per[:, c])) for c in range(per.shape[1])}


def table(runs: dict[str, dict[str, Any]]) -> str:
    head = [
        "training volumes",
        "steps",
        "learning rate",
        "seeds",
        "test Dice per volume: anterior",
        "posterior",
        "mirrored at test: anterior",
        "posterior",
        "training wall s",
    ]
    rows = []
    groups = sorted({(r["train_volumes"], r["steps"], r.get("decay", False)) for r in runs.values()})
    for volumes_, steps, decay in groups:
        recs = [
            r
            for _, r in sorted(runs.items())
            if (r["train_volumes"], r["steps"], r.get("decay", False)) == (volumes_, steps, decay)
        ]

        def dice(key: str, label: str, recs: list[dict[str, Any]] = recs) -> str:
            vals = [r[key][label] for r in recs if key in r]
            return " / ".join(f"{v:.3f}" for v in vals) or "–"

        rows.append(
            [
                str(volumes_),
                str(steps),
                "poly decay" if decay else "constant",
                " / ".join(str(r["seed"]) for r in recs),
                dice("test_per_volume", "anterior"),
                dice("test_per_volume", "posterior"),
                dice("test_per_volume_mirrored", "anterior"),
                dice("test_per_volume_mirrored", "posterior"),
                " / ".join(f"{r['wall_s']:.0f}" for r in recs),
            ]
        )
    return markdown_table(head, rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hippocampus3d", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--volumes", type=int, default=TRAIN_VOLUMES, help="training volumes of the 136")
    p.add_argument("--steps", type=int, default=STEPS, help=f"optimizer steps of {BATCH} volumes")
    p.add_argument("--decay", action="store_true", help="poly learning-rate decay to 0 (nnU-Net's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--merge", type=Path, nargs="*", default=[], help="take these logs' runs into --out")
    p.add_argument("--render-only", action="store_true", help="write the table of --out's runs; train none")
    p.add_argument("--no-markdown", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = args.out or OUT_DIR / f"hippocampus3d-{time.strftime('%Y%m%d-%H%M%S')}.json"
    log = ResultLog(path, {"box": list(BOX), "batch": BATCH})
    tag = f"v{args.volumes}|{args.steps}" + ("|decay" if args.decay else "")
    jobs = [
        (f"{tag}|s{seed}", lambda seed=seed: run_3d(seed, args.volumes, args.steps, decay=args.decay))
        for seed in args.seeds
    ]
    for other in args.merge:
        log.absorb(other)
    if not args.render_only:
        run_all(jobs, log, lambda s: print(s, flush=True))
    body = table(log.runs)
    print(body)
    if not args.no_markdown:
        env = "MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184"
        given = list(sys.argv[1:] if argv is None else argv)
        command = f"{env} python -m bench.hippocampus3d {shlex.join(given)}"
        text = section("Hippocampus MR: a 3D network on whole volumes", command, log.data, body, [])
        write_section("hippocampus-3d", text, BENCHMARKS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
