"""LIDC-IDRI nodule crops with four radiologists' masks each, read in place and cached under bench/out/.

1819 grey 128 x 128 crops (the middle slice of each nodule, patients 0001-0700); ``mask-0`` ...
``mask-3`` are four readers' outlines (0/255; empty: that reader did not mark the nodule; the reader
behind ``mask-k`` changes from scan to scan). The split is by patient, so that no patient's nodules sit
on both sides: ``split_indices(patients, (0.7, 0.1, 0.2), seed=0)``.

The benchmark trains on ``mask-0`` (nearly always drawn) and judges it against the other three readers
(``reader_agreement``): where at least two of them marked the nodule, the disagreement of ``mask-0`` is
1 - Dice(mask-0, majority of the other three); where none did, the nodule is "singly marked".
Shape legend: N crops, R = 4 readers, S the training size.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from bench.common import BADLY_WRONG, OUT_DIR, SHARED_DATA, Split, cached_arrays
from bench.report import BENCHMARKS, markdown_table, section, write_section
from gtcorrect.data import prepare, read_image, read_mask, split_indices
from gtcorrect.metrics import foreground_dice
from gtcorrect.types import LabelMap, ReaderMasks

LIDC = SHARED_DATA / "lidc-crops"
READERS = 4
LABELS = LabelMap(("background", "nodule"))
_PATIENT = re.compile(r"LIDC-IDRI-(\d+)_")


def _build(root: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    names = sorted(p.name for p in (root / "images").glob("*.png"))
    if not names:
        raise ValueError(f"{root / 'images'}: no .png crops found (is this the LIDC crops folder?).")
    images = [read_image(root / "images" / n) for n in names]
    readers = []
    for r in range(READERS):
        masks = [read_mask(root / f"mask-{r}" / n, num_classes=2) for n in names]
        readers.append(prepare(images, masks, names, label_map=LABELS, size=size, channels=1).masks)
    data = prepare(
        images,
        [np.zeros(i.shape[:2], np.int64) for i in images],
        names,
        label_map=LABELS,
        size=size,
        channels=1,
    )
    return (
        data.images.astype(np.float16),
        np.stack(readers, 1).astype(np.uint8),
        [Path(n).stem for n in names],
    )


def load_arrays(
    size: int, root: Path = LIDC, cache_dir: Path = OUT_DIR
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All crops (N, 1, S, S) float32, the readers' masks (N, R, S, S) int64 and ids; cached."""
    return cached_arrays(cache_dir / f"lidc-{size}.npz", lambda: _build(root, size))


def patient_split(ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) crop indices, every patient's crops on one side."""
    patients = sorted({_PATIENT.match(i).group(1) for i in ids})  # type: ignore[union-attr]
    parts = split_indices(len(patients), (0.7, 0.1, 0.2), seed=0)
    side = {patients[j]: k for k, part in enumerate(parts) for j in part}
    which = np.array([side[_PATIENT.match(i).group(1)] for i in ids])  # type: ignore[union-attr]
    return tuple(np.flatnonzero(which == k) for k in range(3))  # type: ignore[return-value]


@dataclass
class ReaderAgreement:
    """Per training crop: the disagreement of ``mask-0`` with the majority of the other readers (NaN
    where fewer than two of them marked the nodule) and whether no other reader marked it."""

    disagreement: np.ndarray  # (N,) 1 - Dice(mask-0, majority of readers 1-3)
    singly_marked: np.ndarray  # (N,) bool: readers 1-3 all empty


def others_majority(readers: np.ndarray, reader: int = 0) -> np.ndarray:
    """(N, S, S) the pixels two or more of the readers other than ``reader`` marked, from (N, R, S, S)."""
    return ((np.delete(readers, reader, axis=1) > 0).sum(1) >= 2).astype(np.int64)


def reader_agreement(readers: np.ndarray) -> ReaderAgreement:
    """From the readers' masks (N, R, S, S) of the crops trained on ``mask-0``."""
    marked = (readers[:, 1:] > 0).any((2, 3)).sum(1)
    dis = 1.0 - foreground_dice(readers[:, 0], others_majority(readers))
    return ReaderAgreement(np.where(marked >= 2, dis, np.nan), marked == 0)


def consensus(readers: np.ndarray) -> np.ndarray:
    """The pixel majority of the readers who marked the nodule (N, S, S): the reference the test set is
    judged against (ties count as foreground, so two of four readers suffice)."""
    marked = (readers > 0).any((2, 3))
    votes = (readers > 0).sum(1)
    need = np.maximum(marked.sum(1), 1)[:, None, None] / 2.0
    return ((votes >= need) & (votes > 0)).astype(np.int64)


def every_reader(readers: np.ndarray) -> ReaderMasks:
    """The masks of the readers who marked each crop (N, R, S, S), equal weights: a slot names no
    radiologist (the reader behind ``mask-k`` changes from scan to scan), so no reader can earn a weight."""
    stacks = [r[(r > 0).any((1, 2))] for r in readers]
    return ReaderMasks.of(stacks, [[1.0] * len(s) for s in stacks])


def lidc_split(
    size: int, reader: int | None = 0, root: Path = LIDC, *, readers_learnt: bool = False
) -> tuple[Split, np.ndarray]:
    """The patient split with ``mask-{reader}`` (``None``: the readers' consensus) as the training masks and
    the consensus as the validation and test masks; also the training crops' four masks (N, R, S, S).
    ``readers_learnt`` (with the consensus): every marking reader's mask is learnt from (``every_reader``),
    the consensus judged."""
    images, readers, ids = load_arrays(size, root)
    train, val, test = patient_split(ids)
    ref = consensus(readers)
    given = ref if reader is None else readers[:, reader]
    name = {0: f"lidc-{size}", None: f"lidc-consensus-{size}"}.get(reader, f"lidc-{size}-reader{reader}")
    if readers_learnt:
        name = f"lidc-every-reader-{size}"
    split = Split.of(
        name,
        images,
        given,
        ids,
        (train, val, test),
        LABELS,
        ref,
    )
    if reader is not None:  # the other readers' majority, where at least two of them marked the nodule
        split = replace(split, train_reference=others_majority(readers[train], reader))
    elif readers_learnt:
        split = replace(split, train_readers=every_reader(readers[train]))
    return split, readers[train]


def rankings(record: dict[str, Any]) -> dict[str, np.ndarray]:
    """A run's per-mask doubt (N,), more is more doubtful, by name: plain training's final CE + Dice loss;
    for G-T the verdict's probability of being wrong as logged (4 decimals: nearly every mask of a clean
    set is 0.0000 there) and the job's ranking, the order the noise report and the review page show
    (that probability, ties broken by the verdict's score)."""
    per = record["per_sample"]
    if record["spec"]["method"] != "gt":
        return {"plain training: final loss": np.asarray(per["kept_score"], dtype=np.float64)}
    noise = 1.0 - np.asarray(per["clean_prob"], dtype=np.float64)
    order = np.lexsort((np.asarray(per["score"], dtype=np.float64), noise))
    rank = np.empty(noise.size)
    rank[order] = np.arange(noise.size)
    return {"G-T: probability of being wrong": noise, "G-T: the job's ranking": rank}


def reader_figures(record: dict[str, Any], doubt: np.ndarray, agreement: ReaderAgreement) -> dict[str, float]:
    """How one run's per-mask ``doubt`` (``rankings``) tracks the other readers' disagreement with
    ``mask-0``: Spearman over the nodules at least two other readers marked, AUROC for Dice < 0.7 there,
    and on the singly-marked nodules the share flagged and the AUROC of the doubt against the others."""
    per = record["per_sample"]
    dis = agreement.disagreement
    rated = np.isfinite(dis)
    bad = (1.0 - dis[rated]) < BADLY_WRONG
    single = agreement.singly_marked
    both = rated | single
    flagged = np.array(per["flagged"], dtype=bool)
    return {
        "n_rated": float(rated.sum()),
        "n_bad": float(bad.sum()),
        "spearman": float(spearmanr(doubt[rated], dis[rated]).statistic),
        "auroc_bad": float(roc_auc_score(bad, doubt[rated])),
        "n_single": float(single.sum()),
        "single_flagged": float(flagged[single].mean()),
        "rated_flagged": float(flagged[rated].mean()),
        "single_auroc": float(roc_auc_score(single[both], doubt[both])),
        "test_dice": float(record["test"]["dice"]),
    }


def corrections_note(record: dict[str, Any]) -> str | None:
    """Where a run handed corrections of ``mask-0`` back: did they move the masks toward the other readers?
    Dice with the other readers' majority before and after, over the corrected nodules at least two of them
    marked (``per_sample``'s ``*_reference``). None when nothing was handed back or the log predates it."""
    per = record["per_sample"]
    if not per.get("dice_given_reference") or not any(per["proposed"]):
        return None
    proposed = np.array(per["proposed"], dtype=bool)
    given = np.array(per["dice_given_reference"], dtype=np.float64)
    corrected = np.array(per["dice_corrected_reference"], dtype=np.float64)
    rated = proposed & np.isfinite(given) & np.isfinite(corrected)
    head = f"Seed {record['spec']['seed']}: {proposed.sum()} corrections handed back"
    if not rated.any():
        return head + ", none on a nodule two other readers marked."
    before, after = given[rated], corrected[rated]
    return (
        f"{head}; on the {rated.sum()} nodules at least two other readers marked, Dice with their majority "
        f"{before.mean():.3f} -> {after.mean():.3f} ({(after > before).sum()} closer, "
        f"{(after < before).sum()} further)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The real readers of LIDC: how well each run of a ``bench.quality --dataset lidc --alphas 0`` log
    ranks ``mask-0`` against the other three readers (``reader_figures``); writes the BENCHMARKS.md
    section ``lidc-readers``."""
    p = argparse.ArgumentParser(
        prog="python -m bench.lidc", description="LIDC: ranking mask-0 against its readers"
    )
    p.add_argument("--log", type=Path, required=True, help="a bench.quality --dataset lidc --alphas 0 log")
    p.add_argument(
        "--consensus-log",
        type=Path,
        help="a bench.quality --dataset lidc-consensus log: the same network trained on the consensus",
    )
    p.add_argument("--no-markdown", action="store_true")
    args = p.parse_args(argv)
    data = json.loads(args.log.read_text())
    _, readers = lidc_split(int(data["settings"]["size"]))
    agreement = reader_agreement(readers)
    rows: dict[str, list[dict[str, float]]] = {}
    for _, record in sorted(data["runs"].items()):
        for name, doubt in rankings(record).items():
            rows.setdefault(name, []).append(reader_figures(record, doubt, agreement))
    head = [
        "ranking",
        "seeds",
        "Spearman with the disagreement",
        "AUROC for Dice < 0.7",
        "flagged: singly marked / marked by >= 2 others",
        "AUROC singly marked vs the rest",
        "test Dice (vs consensus)",
    ]

    def cells(figs: list[dict[str, float]], key: str) -> str:
        return " / ".join(f"{f[key]:.3f}" for f in figs)

    body = markdown_table(
        head,
        [
            [
                name,
                str(len(figs)),
                cells(figs, "spearman"),
                cells(figs, "auroc_bad"),
                " · ".join(f"{f['single_flagged']:.2f} / {f['rated_flagged']:.2f}" for f in figs),
                cells(figs, "single_auroc"),
                cells(figs, "test_dice"),
            ]
            for name, figs in rows.items()
        ],
    )
    first = next(iter(rows.values()))[0]
    note = (
        f"{first['n_rated']:.0f} training nodules marked by at least two of the other readers "
        f"({first['n_bad']:.0f} of them with Dice < {BADLY_WRONG} against their majority), "
        f"{first['n_single']:.0f} marked by mask-0 alone."
    )
    notes = [note] + [
        line for _, record in sorted(data["runs"].items()) if (line := corrections_note(record)) is not None
    ]
    if args.consensus_log is not None:
        consensus = sorted(
            json.loads(args.consensus_log.read_text())["runs"].values(), key=lambda r: r["spec"]["seed"]
        )
        dice = " / ".join(f"{r['test']['dice']:.3f}" for r in consensus)
        notes.append(
            f"The same network trained on the readers' consensus instead of mask-0 (plain training, "
            f"`{args.consensus_log}`): test Dice {dice} against the consensus, beside the rows' last column."
        )
    print(body + "\n\n" + "\n\n".join(notes))
    if not args.no_markdown:
        command = f"python -m bench.lidc --log {args.log}"
        if args.consensus_log is not None:
            command += f" --consensus-log {args.consensus_log}"
        write_section(
            "lidc-readers", section("LIDC: the real readers", command, data, body, notes), BENCHMARKS
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
