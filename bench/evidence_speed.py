"""The evidence pass's network columns (``gtcorrect.evidence.network_columns``: what every G-stage split
and the final verdict measure per mask), this checkout against an earlier commit on the same inputs:
96 synthetic masks at 128 px (``bench.speed``'s training data) under a blurred, shifted copy of them as
the network's probabilities. Each tree runs in a process of its own, the two alternated ``--rounds``
times; the table gives the median seconds per call and whether the columns are identical. With
``--training``, the whole job instead: ``bench.speed``'s G-T against plain training (96 images, 128 px,
16 epochs) in each tree.

    python -m bench.evidence_speed --baseline 5860cdd
    python -m bench.evidence_speed --baseline 5860cdd --training --rounds 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from bench.worktree import REPO, checkout

N_MASKS, SIZE, CALLS = 96, 128, 5


def inputs() -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (M, 2, S, S) float32, masks (M, S, S) int64), the same in every tree."""
    from scipy import ndimage

    from bench.common import synthetic_split

    masks = np.asarray(synthetic_split(N_MASKS, 0, 0, size=SIZE, seed=0).train_masks)
    fg = np.stack([ndimage.gaussian_filter(np.roll(m.astype(np.float32), 3, axis=1), 3) for m in masks])
    return np.stack([1.0 - fg, fg], 1).astype(np.float32), masks


def measure() -> dict[str, object]:
    """Median seconds of ``CALLS`` calls in this process and a digest of the columns."""
    from gtcorrect.evidence import network_columns

    probs, masks = inputs()
    times, digest = [], hashlib.sha256()
    for _ in range(CALLS):
        start = time.perf_counter()
        columns, per_class = network_columns(probs, masks)
        times.append(time.perf_counter() - start)
    for name in sorted(columns):
        digest.update(name.encode() + np.ascontiguousarray(columns[name]).tobytes())
    digest.update(np.ascontiguousarray(per_class).tobytes())
    return {"seconds": statistics.median(times), "digest": digest.hexdigest()[:16]}


def measure_training() -> dict[str, object]:
    """``bench.speed.training`` in this process: wall seconds of plain training and of G-T."""
    from bench.speed import training
    from gtcorrect.config import NetConfig

    out = training(SIZE, N_MASKS, 16, NetConfig(), "cpu")
    return {"plain_s": out["plain_s"], "gt_s": out["gt_s"], "ratio": out["ratio"]}


def _in(tree: Path, what: str = "measure") -> dict[str, object]:
    # The measuring code is this checkout's; the engine comes from ``tree`` (first on the path).
    code = (
        f"import json, runpy, sys; sys.path[:0] = [{str(tree)!r}]; "
        f"print(json.dumps(runpy.run_path({__file__!r})[{what!r}]()))"
    )
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{REPO}"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"measuring in {tree} failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.evidence_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", help="a git revision to measure side by side")
    p.add_argument("--rounds", type=int, default=3, help="alternations of the two trees (default 3)")
    p.add_argument("--training", action="store_true", help="G-T against plain training instead")
    args = p.parse_args(argv)
    with checkout(args.baseline) if args.baseline else nullcontext(REPO) as old:
        trees = [("this checkout", REPO)] + ([(args.baseline, old)] if args.baseline else [])
        runs: dict[str, list[dict[str, object]]] = {label: [] for label, _ in trees}
        for _ in range(args.rounds):
            for label, tree in trees:
                runs[label].append(_in(tree, "measure_training" if args.training else "measure"))
    if args.training:
        print(f"| tree | plain s | G-T s | G-T ÷ plain (each of {args.rounds} rounds) |\n|---|---|---|---|")
        for label, rows in runs.items():
            plain = statistics.median(float(r["plain_s"]) for r in rows)  # type: ignore[arg-type]
            gt = statistics.median(float(r["gt_s"]) for r in rows)  # type: ignore[arg-type]
            ratios = " / ".join(f"{float(r['ratio']):.2f}" for r in rows)  # type: ignore[arg-type]
            print(f"| {label} | {plain:.1f} | {gt:.1f} | {ratios} |")
        return 0
    print(f"| tree | masks | s per call (median of {args.rounds} x {CALLS}) | columns digest |")
    print("|---|---|---|---|")
    for label, rows in runs.items():
        seconds = statistics.median(float(r["seconds"]) for r in rows)  # type: ignore[arg-type]
        print(f"| {label} | {N_MASKS} at {SIZE} px | {seconds:.3f} | {rows[0]['digest']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
