"""How well the image alone tells wrong masks from right ones: the edge alignment of each mask's outline
(``gtcorrect.boundary``), without any training, as a ranking of the wrong masks (AUROC).

    python -m bench.edges

Kvasir-SEG: the 700 training masks at 128 px with simulated noise (regimes and alphas of the quality
benchmark, seeds 0 and 1; the corruption type's AUROC as well). BU-BIL: the worst-agreeing crowd
worker's 108 training masks at 64 px, wrong = Dice below 0.8 against the consensus (bench/bu_bil.py).
Writes the section "edges" of BENCHMARKS.md. Takes about a minute.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from bench.bu_bil import crowd_split, load_crowd
from bench.common import machine
from bench.kvasir import kvasir_split
from bench.quality import make_noise
from bench.report import section, write_section
from gtcorrect.boundary import edge_alignment

SETTINGS = {"kvasir_size": 128, "kvasir_n_train": 700, "bu_bil_size": 64, "bu_bil_n_train": 108}


def _auroc(wrong: np.ndarray, alignment: np.ndarray) -> float:
    """AUROC of low alignment for the wrong masks; masks without an outline rank in the middle."""
    filled = np.where(np.isfinite(alignment), alignment, np.nanmedian(alignment))
    return float(roc_auc_score(wrong, -filled))


def kvasir_rows(regimes: Sequence[tuple[str, float]], seeds: Sequence[int]) -> list[list[str]]:
    split = kvasir_split(SETTINGS["kvasir_size"], SETTINGS["kvasir_n_train"])
    rows = []
    for regime, alpha in regimes:
        for seed in seeds:
            noisy = make_noise(split, regime, alpha, seed)
            alignment = edge_alignment(split.train_images, noisy.masks)
            types = np.array([t or "" for t in noisy.types])
            by_type = []
            for t in sorted(set(types) - {""}):
                pick = (types == t) | ~noisy.truth  # this type's wrong masks against every right one
                by_type.append(f"{t} {_auroc(noisy.truth[pick], alignment[pick]):.3f}")
            clean = alignment[~noisy.truth]
            rows.append(
                [
                    f"Kvasir-SEG {regime}",
                    f"{alpha:g}",
                    str(seed),
                    f"{_auroc(noisy.truth, alignment):.3f}",
                    f"{np.nanmean(clean):.2f} / {np.nanmean(alignment[noisy.truth]):.2f}",
                    ", ".join(by_type),
                ]
            )
    return rows


def bu_bil_row() -> list[str]:
    split, worst, wrong = crowd_split(load_crowd(), SETTINGS["bu_bil_size"], SETTINGS["bu_bil_n_train"])
    alignment = edge_alignment(split.train_images, worst)
    return [
        "BU-BIL worst crowd worker",
        f"{wrong.mean():.2f}",
        "–",
        f"{_auroc(wrong, alignment):.3f}",
        f"{np.nanmean(alignment[~wrong]):.2f} / {np.nanmean(alignment[wrong]):.2f}",
        "–",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.edges", description=__doc__.split("\n")[0])
    p.add_argument("--no-markdown", action="store_true", help="do not touch BENCHMARKS.md")
    args = p.parse_args(argv)
    rows = kvasir_rows([("strong", 0.3), ("strong", 0.5), ("systematic", 0.5)], [0, 1]) + [bu_bil_row()]
    head = [
        "data",
        "alpha",
        "seed",
        "AUROC (low alignment = wrong)",
        "alignment right / wrong",
        "AUROC by type",
    ]
    body = "\n".join(
        [
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            *("| " + " | ".join(r) + " |" for r in rows),
        ]
    )
    print(body)
    if not args.no_markdown:
        log = {"machine": machine(), "settings": SETTINGS}
        notes = [
            "No training: the masks and images only. Alignment: edge strength on the outline over the band "
            "around it (means for right / wrong masks)."
        ]
        write_section(
            "edges",
            section(
                "Image evidence alone: edge alignment (section edges)",
                "python -m bench.edges",
                log,
                body,
                notes,
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
