"""Which per-sample evidence ranks the noisy masks: every G-stage score, epoch by epoch.

Trains the plain ``noisy`` method on Kvasir-SEG with simulated noise and, at the chosen epochs, scores
every training image with each ``g.sample_loss`` kind (eval mode, no augmentation) and reports the
AUROC of the score against the true noisy flags, plus the accuracy and the estimated noise rate of
the G stage's GMM split on it (``score_transform`` "none" = the paper, "log" = the default). This is
how the default score and schedule were chosen (see ``gtcorrect.config.GStageConfig``):

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 python -m bench.evidence

Writes the table into BENCHMARKS.md (section ``evidence-<regime>``) unless ``--no-markdown``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

from bench.common import machine
from bench.quality import make_noise
from bench.report import BENCHMARKS, write_section
from gtcorrect.config import GStageConfig, TrainConfig
from gtcorrect.gstage import fit_gmm, score_samples
from gtcorrect.loop import Run
from gtcorrect.losses import SAMPLE_LOSS_KINDS
from gtcorrect.metrics import recognition_metrics
from gtcorrect.types import LabelMap, TrainingData


def evidence_rows(
    images: np.ndarray, masks: np.ndarray, truth: np.ndarray, epochs: Sequence[int], seed: int
) -> list[dict[str, object]]:
    """Train "noisy" to max(epochs); at each listed epoch, one row per score kind and GMM transform."""
    ids = [str(i) for i in range(len(masks))]
    data = TrainingData(images=images, masks=masks, ids=ids, label_map=LabelMap())
    config = TrainConfig(method="noisy", seed=seed, image_size=images.shape[-1], epochs=max(epochs))
    run = Run(config, data, torch.device("cpu"), (), None, None)
    run.add_net("student")
    rows: list[dict[str, object]] = []
    for epoch in range(1, max(epochs) + 1):
        run.train_plain_epoch("student", np.arange(run.n), epoch)
        if epoch not in epochs:
            continue
        for kind in SAMPLE_LOSS_KINDS:
            scores = score_samples(run.nets["student"], run.images, run.masks, kind, config.batch_size)
            auroc = recognition_metrics(truth, -scores)["auroc"]
            for transform in ("none", "log"):
                g = dataclasses.replace(GStageConfig(), score_transform=transform)
                clean_prob, _ = fit_gmm(scores, g, seed)
                rec = recognition_metrics(truth, clean_prob)
                rows.append(
                    {
                        "epoch": epoch,
                        "score": kind,
                        "transform": transform,
                        "auroc": auroc,
                        "accuracy": rec["accuracy"],
                        "estimated_noise_rate": rec["estimated_noise_rate"],
                    }
                )
        print(f"epoch {epoch}: scored", flush=True)
    return rows


def table(rows: Sequence[dict[str, object]]) -> str:
    lines = [
        "| epoch | score | AUROC | GMM acc. (raw / log) | est. noise rate (raw / log) |",
        "|---|---|---|---|---|",
    ]
    by_key: dict[tuple[object, object], dict[object, dict[str, object]]] = {}
    for r in rows:
        by_key.setdefault((r["epoch"], r["score"]), {})[r["transform"]] = r
    for (epoch, score), t in by_key.items():
        raw, log = t["none"], t["log"]
        lines.append(
            f"| {epoch} | {score} | {raw['auroc']:.3f} | {raw['accuracy']:.3f} / {log['accuracy']:.3f} "
            f"| {raw['estimated_noise_rate']:.2f} / {log['estimated_noise_rate']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.evidence", description=__doc__.split("\n")[0])
    p.add_argument("--regime", default="strong", help="noise preset (default strong mixed)")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=700)
    p.add_argument("--epochs", type=int, nargs="+", default=[10, 20, 30, 40])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-markdown", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from bench.kvasir import kvasir_split

    split = kvasir_split(128, args.n_train)
    noisy = make_noise(split, args.regime, args.alpha, args.seed)
    start = time.monotonic()
    rows = evidence_rows(split.train_images, noisy.masks, noisy.truth, sorted(set(args.epochs)), args.seed)
    body = table(rows)
    print(body)
    if not args.no_markdown:
        m = machine()
        env = "MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184"
        command = f"{env} python -m bench.evidence"
        given = list(sys.argv[1:] if argv is None else argv)
        text = "\n".join(
            [
                f"### Per-sample evidence: {args.regime} mixed, alpha {args.alpha:g}, seed {args.seed}",
                "",
                "Command:",
                "```",
                f"{command} {shlex.join(given)}".rstrip(),
                "```",
                f"Machine: {m['cpu_count']} CPUs, torch {m['torch']} ({m['torch_threads']} thread(s)), "
                f"{time.monotonic() - start:.0f} s. Plain training on the noisy masks "
                f"({args.n_train} Kvasir-SEG images, 128 px); AUROC of each score, noisy = positive; "
                "GMM split as in the G stage on raw (paper) or log-transformed scores.",
                "",
                body,
            ]
        )
        write_section(f"evidence-{args.regime}", text, BENCHMARKS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
