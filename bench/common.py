"""Shared pieces of the quality benchmarks: data splits, one training run and its scoring, the JSON log.

Shape legend: N images, C channels, S the training size (square), K classes (K = 2 here).
Every figure is computed at the training size S: test images and masks are resized like the training
data (``gtcorrect.data.prepare``) and the network runs on them directly, so test Dice/IoU/HD95 are in
S x S pixels, not at the original resolution.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from gtcorrect.annotators import annotator_report
from gtcorrect.assessment import per_mask_loss
from gtcorrect.boundary import edge_alignment
from gtcorrect.config import TrainConfig
from gtcorrect.evidence import class_disagreement
from gtcorrect.metrics import (
    correction_metrics,
    foreground_dice,
    recognition_metrics,
    segmentation_metrics,
)
from gtcorrect.networks import VIEWS, view_probs
from gtcorrect.trainer import fit
from gtcorrect.types import FitResult, LabelMap, ReaderMasks, TrainingData

OUT_DIR = Path(__file__).resolve().parent / "out"
# The shared data sits beside the checkout (../shared/data), in development and in CI alike;
# GTC_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("GTC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@dataclass
class Split:
    """A train/val/test split at size S with clean masks.

    train_images, val_images, test_images: (N*, C, S, S) float32 z-scored; *_masks: (N*, S, S) int64.
    """

    name: str
    train_images: np.ndarray
    train_masks: np.ndarray
    train_ids: list[str]
    val_images: np.ndarray
    val_masks: np.ndarray
    test_images: np.ndarray
    test_masks: np.ndarray
    label_map: LabelMap = dataclasses.field(default_factory=LabelMap)
    # (N test,) which volume each test image is a slice of (volumes trained slice-wise), else None.
    test_groups: np.ndarray | None = None
    # (N train, S, S) a second reference for the training masks, where it has foreground (LIDC: the other
    # readers' majority): what the given masks and their corrections are also measured against.
    train_reference: np.ndarray | None = None
    # Every reader's masks of the training images, learnt from in place of the training masks (which stay
    # what is judged): gtcorrect.types.ReaderMasks.
    train_readers: ReaderMasks | None = None

    @property
    def size(self) -> int:
        return int(self.train_images.shape[-1])

    @classmethod
    def of(
        cls,
        name: str,
        images: np.ndarray,
        masks: np.ndarray,
        ids: Sequence[str],
        parts: tuple[np.ndarray, np.ndarray, np.ndarray],
        label_map: LabelMap | None = None,
        eval_masks: np.ndarray | None = None,
    ) -> Split:
        """The split of a whole dataset by (train, val, test) indices; ``eval_masks`` (default ``masks``)
        are the references of the validation and test parts."""
        train, val, test = parts
        ref = masks if eval_masks is None else eval_masks
        return cls(
            name,
            images[train],
            masks[train],
            [ids[i] for i in train],
            images[val],
            ref[val],
            images[test],
            ref[test],
            label_map or LabelMap(),
        )


def synthetic_split(n_train: int, n_val: int, n_test: int, size: int = 32, seed: int = 0) -> Split:
    """Seeded ellipses on smooth textured backgrounds (for ``--smoke`` and the harness tests)."""
    n = n_train + n_val + n_test
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.int64)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        ry, rx = rng.uniform(0.15, 0.3, 2) * size
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        for ch in range(3):
            texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.5)
            images[i, ch] = 2.0 * texture + mask * rng.uniform(0.8, 1.2)
        masks[i] = mask
    images -= images.mean(axis=(2, 3), keepdims=True)
    images /= images.std(axis=(2, 3), keepdims=True) + 1e-6
    a, b = n_train, n_train + n_val
    return Split(
        "synthetic",
        images[:a],
        masks[:a],
        [f"syn{i:04d}" for i in range(a)],
        images[a:b],
        masks[a:b],
        images[b:],
        masks[b:],
    )


Arrays = tuple[np.ndarray, np.ndarray, list[str]]


def cached_arrays(cache: Path, build: Callable[[], Arrays]) -> Arrays:
    """A dataset's prepared (images, masks, ids), built once by ``build`` and kept in ``cache`` (.npz,
    written atomically; images stored as float16): images float32, masks int64."""
    if not cache.exists():
        images, masks, ids = build()
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=images, masks=masks, ids=np.array(ids))
        tmp.replace(cache)
    with np.load(cache) as z:
        return z["images"].astype(np.float32), z["masks"].astype(np.int64), [str(i) for i in z["ids"]]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@torch.no_grad()
def predict_probs(
    model: Any, images: np.ndarray, device: str, batch_size: int = 16, views: int = 1
) -> np.ndarray:
    """Class probabilities (N, K, S, S) float32 of a ``ModelBundle`` on prepared images (N, C, S, S)
    (``views`` 4: averaged over the test-time flips, ``gtcorrect.networks.view_probs``)."""
    net = model.build(device)
    out = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            x = torch.as_tensor(images[start : start + batch_size], dtype=torch.float32, device=device)
            out.append(view_probs(net, x, views).cpu().numpy())
    return np.concatenate(out)


def predict_masks(
    model: Any, images: np.ndarray, device: str, batch_size: int = 16, views: int = 1
) -> np.ndarray:
    """Argmax masks (N, S, S) int64 of a ``ModelBundle`` on prepared images (N, C, S, S)."""
    return predict_probs(model, images, device, batch_size, views).argmax(1).astype(np.int64)


def recognition(truth: np.ndarray, result: FitResult) -> dict[str, float]:
    """Image-level recognition from the method's own flags (N,) bool; AUROC from 1 - clean_prob.

    The thresholded figures use ``result.flagged`` rather than clean_prob <= 0.5 because Co-teaching's
    clean_prob is a rank and its flags come from the forget rate.
    """
    flags = np.asarray(result.flagged, dtype=bool)
    out = recognition_metrics(truth, np.where(flags, 0.0, 1.0))
    out["auroc"] = recognition_metrics(truth, result.clean_prob)["auroc"]
    return out


def recognition_by_type(types: Sequence[str | None], result: FitResult) -> dict[str, dict[str, float]]:
    """Per corruption type: how many masks, the share the method flagged (recall) and the AUROC of that
    type's masks against the clean ones (score 1 - clean_prob). types: (N,), None for a clean mask."""
    kinds = np.array(["" if t is None else t for t in types])
    return {kind: _against_clean(kinds == kind, kinds == "", result) for kind in sorted(set(kinds) - {""})}


def _against_clean(sel: np.ndarray, clean: np.ndarray, result: FitResult) -> dict[str, float]:
    """A group ``sel`` (N,) of wrong masks: its size, the share flagged (recall) and the AUROC of its
    masks against the ``clean`` ones (score 1 - clean_prob); NaN where either group is empty."""
    pair = sel | clean
    some = bool(sel.any())
    auroc = (
        recognition_metrics(sel[pair], np.asarray(result.clean_prob, dtype=np.float64)[pair])["auroc"]
        if some and clean.any()
        else math.nan
    )
    recall = float(np.asarray(result.flagged, dtype=bool)[sel].mean()) if some else math.nan
    return {"n": float(sel.sum()), "recall": recall, "auroc": auroc}


BADLY_WRONG = 0.7  # Dice with the true mask below which a wrong mask is "badly wrong"


def recognition_by_damage(
    truth: np.ndarray, result: FitResult, given: np.ndarray, clean: np.ndarray
) -> dict[str, dict[str, float]]:
    """The wrong masks (truth (N,) bool) in two groups by their Dice with the true mask: badly wrong
    (below ``BADLY_WRONG``) and mild; per group its size, the share flagged (recall) and the AUROC
    against the clean masks (score 1 - clean_prob). A mild corruption of a small object can agree with
    the truth as well as two experts agree with each other (LIDC's readers: median Dice 0.86)."""
    dice = foreground_dice(given, clean)
    return {
        "badly wrong": _against_clean(truth & (dice < BADLY_WRONG), ~truth, result),
        "mild": _against_clean(truth & (dice >= BADLY_WRONG), ~truth, result),
    }


def recognition_by_size(
    truth: np.ndarray, result: FitResult | None, clean: np.ndarray, pred: np.ndarray, bins: int = 5
) -> list[dict[str, float | None]]:
    """Recognition per quantile of the true object size (foreground area of the clean mask).

    truth (N,) bool; result: the method's split (None for a method without one); clean, pred
    (N, S, S): the clean training masks and the returned model's argmax on the training images. Per
    bin: the area range, the AUROC, the share of clean masks flagged (false positives), the share of
    noisy masks flagged (recall) and the median ratio predicted / true area on the clean masks (below
    1: the model under-segments objects of that size, so their correct masks look too large to it).
    The three split figures are None without a split.
    """
    area = (clean > 0).sum((1, 2)).astype(np.float64)
    pred_area = (pred > 0).sum((1, 2)).astype(np.float64)
    edges = np.quantile(area, np.linspace(0.0, 1.0, bins + 1))
    which = np.clip(np.searchsorted(edges, area, side="right") - 1, 0, bins - 1)
    out: list[dict[str, float | None]] = []
    for b in range(bins):
        sel = which == b
        ok = sel & ~truth & (area > 0)
        row: dict[str, float | None] = {
            "area_min": float(edges[b]),
            "area_max": float(edges[b + 1]),
            "pred_area_ratio": float(np.median(pred_area[ok] / area[ok])) if ok.any() else math.nan,
            "auroc": None,
            "clean_flagged": None,
            "recall": None,
        }
        if result is not None and sel.any():  # a bin is empty where many masks share one area (empty slices)
            flags = np.asarray(result.flagged, dtype=bool)
            row["auroc"] = recognition_metrics(truth[sel], result.clean_prob[sel])["auroc"]
            row["clean_flagged"] = float(flags[sel & ~truth].mean()) if (sel & ~truth).any() else math.nan
            row["recall"] = float(flags[sel & truth].mean()) if (sel & truth).any() else math.nan
        out.append(row)
    return out


def _hard(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask.argmax(0) if mask.ndim == 3 else mask)


def handed_back(result: FitResult, given: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """Over all training masks, mean Dice against the truth of what the user gets back: the given mask,
    or its proposed correction where the gate proposed one (``output``), and, for comparison, of the
    output had every correction the T stage made been handed back (``ungated``)."""
    every = {**result.withheld, **result.corrected}

    def mean_dice(chosen: dict[int, np.ndarray]) -> float:
        out = given.copy()
        for i, mask in chosen.items():
            out[i] = _hard(mask)
        return float(foreground_dice(out, clean).mean())

    return {
        "dice_given": float(foreground_dice(given, clean).mean()),
        "dice_output": mean_dice(result.corrected),
        "dice_ungated": mean_dice(every),
        "n_proposed": float(len(result.corrected)),
        "n_ungated": float(len(every)),
    }


def per_sample(
    result: FitResult,
    given: np.ndarray,
    clean: np.ndarray,
    truth: np.ndarray | None,
    kept: np.ndarray | None = None,
    reference: np.ndarray | None = None,
) -> dict[str, list[Any]]:
    """G-T's verdict on every training mask next to the truth, for studying the gate offline: held
    back, score, clean probability, flagged, proposed, Dice(given, truth), and, where the T stage made a
    correction (proposed or withheld), Dice(correction, truth) and the share of the mask it changes; with a
    second ``reference`` (N, S, S), Dice of the given mask and of the correction against it where it has
    foreground (``*_reference``)."""
    every = {**result.withheld, **result.corrected}
    n = given.shape[0]
    corrected_dice, change, corrected_ref = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    ref = np.zeros_like(given) if reference is None else reference
    has_ref = np.asarray((ref > 0).any((1, 2)), dtype=bool)
    for i, mask in every.items():
        hard = _hard(mask)[None]
        corrected_dice[i] = foreground_dice(hard, clean[i : i + 1])[0]
        change[i] = 1.0 - foreground_dice(hard, given[i : i + 1])[0]
        if has_ref[i]:
            corrected_ref[i] = foreground_dice(hard, ref[i : i + 1])[0]
    given_ref = np.full(n, np.nan)
    given_ref[has_ref] = foreground_dice(given[has_ref], ref[has_ref])

    def r4(a: np.ndarray) -> list[Any]:
        return [None if np.isnan(v) else round(float(v), 4) for v in a]

    return {
        "held_out": [] if result.held_out is None else result.held_out.astype(int).tolist(),
        "noisy": [] if truth is None else np.asarray(truth, dtype=int).tolist(),
        "score": r4(result.sample_loss),
        "clean_prob": r4(result.clean_prob),
        "flagged": result.flagged.astype(int).tolist(),
        "proposed": [int(i in result.corrected) for i in range(n)],
        "dice_given": r4(foreground_dice(given, clean)),
        "dice_corrected": r4(corrected_dice),
        "change": r4(change),
        "kept_score": [] if kept is None else r4(kept),
        "dice_predicted": [] if result.predicted is None else r4(foreground_dice(result.predicted, clean)),
        "dice_given_reference": [] if reference is None else r4(given_ref),
        "dice_corrected_reference": [] if reference is None else r4(corrected_ref),
    }


def correction(
    result: FitResult, given: np.ndarray, clean: np.ndarray, only: np.ndarray | None = None
) -> dict[str, float] | None:
    """Quality of every correction the T stage made (proposed by the gate or withheld), on the images
    that got one; None when there are none.

    given, clean: (N, S, S) int64 training masks; only: (N,) bool, restrict to these images (e.g. the
    truly corrupted ones). Soft corrections (K, S, S) are scored by their argmax.
    """
    every = {**result.withheld, **result.corrected}
    idx = [i for i in sorted(every) if only is None or only[i]]
    if not idx:
        return None
    corrected = [_hard(every[i]) for i in idx]
    out = correction_metrics(
        [given[i] for i in idx], [np.asarray(c) for c in corrected], [clean[i] for i in idx]
    )
    out["n_corrected"] = float(len(idx))
    return out


def annotators(split: Split, given: np.ndarray, truth: np.ndarray, result: FitResult) -> list[dict[str, Any]]:
    """The annotator report with the simulated noise as a second annotator: the corrupted masks are
    annotator "noisy", the others "clean" (in the systematic regime "noisy" dilates every mask)."""
    names = ["noisy" if t else "clean" for t in truth]
    predicted = result.predicted
    assert predicted is not None  # the caller checks
    report = annotator_report(
        names, given, predicted, result.flagged, 1.0, edge_alignment(split.train_images, given)
    )
    return [dataclasses.asdict(stats) for stats in report]


def nan_to_none(value: Any) -> Any:
    """JSON has no NaN; undefined figures become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return value


def train_and_score(
    config: TrainConfig,
    split: Split,
    given: np.ndarray,
    truth: np.ndarray | None,
    device: str,
    types: Sequence[str | None] | None = None,
    drawn_by: list[str] | None = None,
) -> dict[str, Any]:
    """Train ``config`` on the split's images with masks ``given`` (N, S, S); score on the clean test set.

    truth: (N,) bool, which training masks are wrong (None: recognition is not scored); types: (N,)
    the corruption type of each mask (None where clean), for recognition per type; drawn_by: (N,)
    who drew each mask, for the engine's annotator check (None: unknown).
    Returns a JSON-ready record (NaN -> null).
    """
    data = TrainingData(
        split.train_images,
        given,
        list(split.train_ids),
        label_map=split.label_map,
        val_images=split.val_images,
        val_masks=split.val_masks,
        annotators=drawn_by,
        readers=split.train_readers,
    )
    start = time.perf_counter()
    result = fit(config, data, device=device)
    wall = time.perf_counter() - start
    pred = predict_masks(result.model, split.test_images, device)
    k = result.model.label_map.num_classes
    record: dict[str, Any] = {
        "wall_s": wall,
        "epochs": len(result.history),
        "test": segmentation_metrics(list(pred), list(split.test_masks), num_classes=k),
        "test_per_class": per_class_dice(pred, split.test_masks, result.model.label_map.names),
        "test_per_volume": None
        if split.test_groups is None
        else per_volume_dice(pred, split.test_masks, split.test_groups, result.model.label_map.names),
        "val_dice": result.metrics.get("val_dice"),
        **_with_flips(result.model, split, device),
        "rounds": [
            {"round": r.round, "separation": r.separation, "n_flagged": r.n_flagged, "n_changed": r.n_changed}
            for r in result.rounds
        ],
        "n_flagged": int(np.count_nonzero(result.flagged)),
        "recognition": None,
        "correction": None,
    }
    has_split = config.method in ("gt", "gmm_select", "coteaching")
    if truth is not None and has_split:
        record["recognition"] = recognition(truth, result)
        if types is not None:
            record["recognition_by_type"] = recognition_by_type(types, result)
        record["recognition_by_damage"] = recognition_by_damage(truth, result, given, split.train_masks)
    if truth is not None:
        train_pred = predict_masks(result.model, split.train_images, device)
        split_result = result if has_split else None
        record["recognition_by_size"] = recognition_by_size(
            truth, split_result, split.train_masks, train_pred
        )
    if result.quality is not None:
        record["quality"] = result.quality.to_dict()
    if truth is not None and result.predicted is not None and has_split:
        record["annotators"] = annotators(split, given, truth, result)
    # Every method's per-mask verdict and final loss (plain training's loss is the baseline ranking).
    kept = per_mask_loss(predict_probs(result.model, split.train_images, device), given, "ce+dice", 0.8)
    record["per_sample"] = per_sample(result, given, split.train_masks, truth, kept, split.train_reference)
    if config.method == "gt":
        record["handed_back"] = handed_back(result, given, split.train_masks)
        record["correction"] = correction(result, given, split.train_masks)
        if truth is not None:
            # Flagged clean masks can only get worse; this isolates what correction does to real errors.
            record["correction_true_noisy"] = correction(result, given, split.train_masks, truth)
    return nan_to_none(record)


def _with_flips(model: Any, split: Split, device: str) -> dict[str, Any]:
    """The test figures again with the network averaged over each test image's flips (what a
    ``segment`` request with ``flips`` answers): ``test_flips`` (Dice) and ``test_per_volume_flips``."""
    pred = predict_masks(model, split.test_images, device, views=len(VIEWS))
    k = model.label_map.num_classes
    return {
        "test_flips": segmentation_metrics(list(pred), list(split.test_masks), num_classes=k)["dice"],
        "test_per_volume_flips": None
        if split.test_groups is None
        else per_volume_dice(pred, split.test_masks, split.test_groups, model.label_map.names),
    }


def per_class_dice(pred: np.ndarray, truth: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Test Dice per foreground class (N, S, S masks), over the images where either has the class."""
    per = 1.0 - class_disagreement(pred, truth, len(names))
    return {
        names[c + 1]: float(np.nanmean(per[:, c]))
        for c in range(per.shape[1])
        if np.isfinite(per[:, c]).any()
    }


def per_volume_dice(
    pred: np.ndarray, truth: np.ndarray, groups: np.ndarray, names: Sequence[str]
) -> dict[str, float]:
    """Test Dice per foreground class with each volume's slices (N, S, S) pooled into one Dice (``groups``
    (N,): the volume of each slice), mean over the volumes that have the class (a 3D method's figure)."""
    size = truth.shape[-1]
    stacked = [
        (pred[groups == g].reshape(1, -1, size), truth[groups == g].reshape(1, -1, size))
        for g in np.unique(groups)
    ]
    per = np.concatenate([class_disagreement(p, t, len(names)) for p, t in stacked])
    return {
        names[c + 1]: float(np.nanmean(1.0 - per[:, c]))
        for c in range(per.shape[1])
        if np.isfinite(per[:, c]).any()
    }


class ResultLog:
    """The benchmark's JSON file: settings, machine and one record per run key, rewritten after each run.

    Opening an existing file resumes it: runs whose key is present are skipped. Settings must match,
    so that a resumed run never mixes schedules.
    """

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"settings": settings, "machine": machine(), "runs": {}}
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("settings") != settings:
                raise ValueError(
                    f"{path}: its settings differ from this run's; start a new file or pass the same "
                    f"options (file: {old.get('settings')}, now: {settings})."
                )
            self.data["runs"] = old.get("runs", {})

    def has(self, key: str) -> bool:
        if key not in self.data["runs"] and self.path.exists():
            self.data["runs"].update(json.loads(self.path.read_text()).get("runs", {}))
        return key in self.data["runs"]

    def add(self, key: str, record: dict[str, Any]) -> None:
        """Store one run. Runs that other processes added to the file meanwhile are kept (file lock)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.exists():
                self.data["runs"].update(json.loads(self.path.read_text()).get("runs", {}))
            self.data["runs"][key] = record
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
            tmp.replace(self.path)  # atomic, so a killed run never leaves half a file

    def absorb(self, other: Path) -> None:
        """Take the runs of another log of the same settings (runs made side by side into two files)."""
        data = json.loads(other.read_text())
        if data.get("settings") != self.data["settings"]:
            raise ValueError(f"{other}: its settings differ from {self.path}'s; it cannot be merged.")
        for key, record in data.get("runs", {}).items():
            if not self.has(key):
                self.add(key, record)

    @property
    def runs(self) -> dict[str, dict[str, Any]]:
        return dict(self.data["runs"])


def run_all(
    jobs: Sequence[tuple[str, Callable[[], dict[str, Any]]]],
    log: ResultLog,
    report: Callable[[str], None] = print,
) -> int:
    """Run each (key, thunk) not yet in ``log``; return how many were run."""
    done = 0
    for i, (key, thunk) in enumerate(jobs, 1):
        if log.has(key):
            report(f"[{i}/{len(jobs)}] {key}: in the log, skipped")
            continue
        record = thunk()
        log.add(key, record)
        done += 1
        test = f"test dice {record['test']['dice']:.3f}, " if "test" in record else ""
        report(f"[{i}/{len(jobs)}] {key}: {test}{record['wall_s']:.0f} s")
    return done
