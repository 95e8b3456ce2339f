"""Few wrong masks among many: do they stand out from the kept network's scores, and do they stand out
differently from clean masks on images the network gets wrong?

Reads quality-benchmark JSON files (``python -m bench.quality ...``, G-T runs: their ``per_sample`` holds
the kept network's score of every given training mask and Dice of its prediction against the truth) and
counts, per run, the training masks whose score lies ``--z`` or more robust standard deviations
(1.4826 x MAD) above the median: how many are truly wrong, and what replacing them by the network's
prediction would do to them (mean Dice against the truth, given -> predicted).

    python -m bench.tail bench/out/tail-kvasir-a0.json bench/out/tail-bu-bil.json

Writes the section "tail" of BENCHMARKS.md unless ``--no-markdown``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import BENCHMARKS, write_section


def _array(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def tail_row(dataset: str, key: str, run: dict[str, Any], z_min: float) -> list[str] | None:
    """One table row for a G-T run with kept-network scores; None for other runs."""
    per = run.get("per_sample") or {}
    if not per.get("kept_score"):
        return None
    train = ~np.array(per["held_out"], dtype=bool)
    score = _array(per["kept_score"])[train]
    given = _array(per["dice_given"])[train]
    predicted = _array(per["dice_predicted"])[train]
    wrong = np.array(per["noisy"], dtype=bool)[train] if per.get("noisy") else np.zeros(score.size, bool)
    median = float(np.median(score))
    spread = 1.4826 * float(np.median(np.abs(score - median)))
    tail = (score - median) / spread >= z_min
    regime, alpha, _method, _variant, seed = key.split("|")
    quality = run.get("quality") or {}
    calibration = quality.get("calibration") or {}
    edge = calibration.get("edge_auroc")
    return [
        dataset,
        regime,
        alpha.removeprefix("a"),
        seed.removeprefix("s"),
        str(int(train.sum())),
        str(int(wrong.sum())),
        f"{int(tail.sum())} ({int((tail & wrong).sum())} wrong)",
        f"{given[tail].mean():.3f} → {predicted[tail].mean():.3f}" if tail.any() else "–",
        f"{quality.get('separation', float('nan')):.2f}",
        "–" if edge is None else f"{edge:.2f}",
    ]


HEADER = [
    "data",
    "regime",
    "alpha",
    "seed",
    "training masks",
    "truly wrong",
    "masks at z >= {z:g}",
    "those masks: Dice given → network's prediction (vs truth)",
    "S final",
    "self-test edge AUROC",
]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tail", description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path, nargs="+", help="quality-benchmark JSON files with G-T runs")
    p.add_argument("--z", type=float, default=5.0, help="robust z-score from which a mask is in the tail")
    p.add_argument("--no-markdown", action="store_true", help="do not touch the markdown file")
    p.add_argument("--benchmarks", type=Path, default=BENCHMARKS, help="markdown file to update")
    args = p.parse_args(argv)
    rows = []
    for path in args.json:
        log = json.loads(path.read_text())
        for key, run in sorted(log["runs"].items()):
            row = tail_row(str(log["settings"].get("dataset", "?")), key, run, args.z)
            if row is not None:
                rows.append(row)
    header = [h.format(z=args.z) for h in HEADER]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)  # noqa: T201 (a command-line tool)
    if not args.no_markdown:
        command = "python -m bench.tail " + " ".join(shlex.quote(str(a)) for a in args.json)
        body = f"### Few wrong masks, or hard images? (tail)\n\nCommand:\n```\n{command}\n```\n\n{table}"
        write_section("tail", body, args.benchmarks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
