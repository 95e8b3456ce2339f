"""The engine commands' work (``train``, ``simulate-noise``, ``predict``); ``gtcorrect.cli`` defines their
options and imports this module only when one of them runs, so that ``--help`` starts without torch."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from gtcorrect import volumes
from gtcorrect.cli import REPORT_FIELDS
from gtcorrect.config import ConfigLimits, TrainConfig, check_config, preset_config
from gtcorrect.data import (
    load_folder,
    mask_to_png,
    prepare,
    read_image,
    read_mask,
    restore_mask,
)
from gtcorrect.data import restore_probabilities as restore_prob
from gtcorrect.formats import IMAGE_SUFFIXES
from gtcorrect.noise import PRESETS, corrupt_stream
from gtcorrect.types import FitResult, LabelMap, Progress

if TYPE_CHECKING:
    from gtcorrect.inference import Predictor


def _label_map(num_classes: int) -> LabelMap:
    if num_classes < 2:
        raise ValueError(f"--num-classes must be >= 2, got {num_classes}.")
    if num_classes == 2:
        return LabelMap()
    return LabelMap(("background", *(f"class_{k}" for k in range(1, num_classes))))


def _device(name: str) -> str:
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} requested but CUDA is not available on this machine.")
    return name


def _config(args: argparse.Namespace) -> TrainConfig:
    """--preset, then --config (a partial TrainConfig) on top, then --method/--size/--seed."""
    given: dict[str, Any] = {}
    if args.config:
        try:
            given = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{args.config}: cannot read the config ({exc}).") from exc
        if not isinstance(given, dict):
            raise ValueError(f"{args.config}: a config is a JSON object.")
    config = TrainConfig.from_dict(preset_config(args.preset, given) if args.preset else given)
    overrides = {
        k: v
        for k, v in (("method", args.method), ("image_size", args.size), ("seed", args.seed))
        if v is not None
    }
    config = dataclasses.replace(config, **overrides)
    check_config(config, ConfigLimits())  # the service's default limits: a typo of 10**9 epochs stops here
    return config


def _write_report(out: Path, result: FitResult, names: dict[str, str]) -> None:
    """noise_report.csv and .json; ``names``: image file stem (the sample's id) -> file name."""
    rows = [
        {
            "file_name": names.get(sid, sid),
            "clean_probability": float(result.clean_prob[i]),
            "flagged": bool(result.flagged[i]),
            "loss": float(result.sample_loss[i]),
            "round_decided": int(result.round_decided[i]),
            "held_out": bool(result.held_out[i]) if result.held_out is not None else False,
            "decided_by": "" if result.decided_by is None else result.decided_by[i],
            "correction_proposed": i in result.corrected,
            "withheld_because": "" if result.withheld_because is None else result.withheld_because[i] or "",
        }
        for i, sid in enumerate(result.ids)
    ]
    with open(out / "noise_report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=REPORT_FIELDS)
        writer.writeheader()
        # true/false as in the JSON and the service's CSV
        writer.writerows(
            {k: str(v).lower() if isinstance(v, bool) else v for k, v in r.items()} for r in rows
        )
    (out / "noise_report.json").write_text(json.dumps(rows, indent=1))


def read_annotators(path: Path, ids: Sequence[str]) -> list[str]:
    """Who drew each mask, from a CSV with columns mask,annotator (the mask's file name or stem); every
    mask needs one row, and a mask named twice or unknown is an error naming it."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the annotators ({exc}).") from exc
    if not rows or not {"mask", "annotator"} <= set(rows[0]):
        raise ValueError(f"{path}: needs the columns mask,annotator (one row per mask).")
    found: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        stem = Path(row["mask"].strip()).stem
        if stem in found:
            raise ValueError(f"{path}, line {line}: mask {row['mask']!r} is named twice.")
        if not row["annotator"].strip():
            raise ValueError(f"{path}, line {line}: mask {row['mask']!r} has no annotator.")
        found[stem] = row["annotator"].strip()
    unknown = sorted(set(found) - set(ids))
    if unknown:
        raise ValueError(
            f"{path}: no mask named {unknown[0]!r} in the masks folder ({len(unknown)} unknown)."
        )
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValueError(f"{path}: no annotator for mask {missing[0]!r} ({len(missing)} without one).")
    return [found[i] for i in ids]


def _restored(m: np.ndarray, size: tuple[int, int], lm: LabelMap) -> np.ndarray:
    """A corrected mask at the training size, hard (S, S) or soft (K, S, S), at its original size."""
    return restore_prob(m, size).argmax(axis=0) if m.ndim == 3 else restore_mask(m, size, lm.num_classes)


def _write_corrected(out: Path, result: FitResult, sizes: Sequence[tuple[int, int]], lm: LabelMap) -> None:
    folder = out / "corrected"
    folder.mkdir(parents=True, exist_ok=True)
    for i, m in result.corrected.items():
        (folder / f"{result.ids[i]}.png").write_bytes(mask_to_png(_restored(m, sizes[i], lm), lm))


def _holds_volumes(folder: Path) -> bool:
    return folder.is_dir() and any(volumes.is_volume(p) for p in folder.iterdir())


def _write_volumes(
    out: Path,
    result: FitResult,
    sizes: Sequence[tuple[int, int]],
    lm: LabelMap,
    like: dict[str, volumes.Volume],
) -> None:
    """Volumes trained slice-wise: ``volumes.json``, one verdict per volume with the slices that look
    wrong, and ``corrected/<volume>.nii.gz`` for each volume with a corrected slice: its label volume with
    those slices replaced, in the label file's affine and header."""
    noise = 1.0 - np.asarray(result.clean_prob)
    report = volumes.volume_report(list(result.ids), noise, np.asarray(result.flagged))
    (out / "volumes.json").write_text(json.dumps(report, indent=1))
    changed: dict[str, dict[int, np.ndarray]] = {}
    for i, m in result.corrected.items():
        name, k = volumes.parse_slice_id(result.ids[i])
        changed.setdefault(name, {})[k] = _restored(m, sizes[i], lm)
    folder = out / "corrected"
    folder.mkdir(parents=True, exist_ok=True)
    for name, slices in changed.items():
        label = like[name]
        given = volumes.label_slices(label, lm.num_classes)
        labels = volumes.stack([slices.get(k, given[k]) for k in range(label.n_slices)])
        (folder / f"{name}.nii.gz").write_bytes(volumes.label_volume_bytes(labels, label))


def train(args: argparse.Namespace) -> int:
    from gtcorrect.plots import gmm_histogram_png  # heavy imports, only for this command
    from gtcorrect.trainer import fit

    config = _config(args)
    device = _device(args.device)
    lm = _label_map(args.num_classes)
    like: dict[str, volumes.Volume] = {}  # NIfTI volumes, trained slice-wise: each label volume by name
    if _holds_volumes(Path(args.images)):
        images, masks, ids, like = volumes.load_volume_folder(
            Path(args.images), Path(args.masks), lm.num_classes
        )
    else:
        images, masks, ids = load_folder(
            args.images,
            args.masks,
            num_classes=lm.num_classes,
            mask_mode=args.mask_mode,
            invert=args.invert_masks,
            threshold=args.threshold,
            mask_prefix=args.mask_prefix,
        )
    data = prepare(images, masks, ids, label_map=lm, size=config.image_size)
    if args.annotators:
        data.annotators = read_annotators(Path(args.annotators), ids)
    sizes = [(int(im.shape[0]), int(im.shape[1])) for im in images]
    del images, masks
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(config.to_json())
    with tqdm(unit="epoch", file=sys.stderr, dynamic_ncols=True) as bar:

        def on_progress(p: Progress) -> None:
            bar.total = p.total_epochs
            bar.n = p.epoch
            bar.set_description(p.phase if p.round is None else f"{p.phase} r{p.round}")
            bar.set_postfix({k: f"{v:.3f}" for k, v in p.losses.items()}, refresh=True)

        result = fit(config, data, device=device, callbacks=(on_progress,))
    result.model.save(str(out / "model.pt"))
    _write_report(out, result, {p.stem: p.name for p in Path(args.images).iterdir()})
    if like:
        _write_volumes(out, result, sizes, lm, like)
    else:
        _write_corrected(out, result, sizes, lm)
    if result.annotator_report:
        (out / "annotators.json").write_text(json.dumps(result.annotator_report, indent=1))
    if result.quality is not None:
        (out / "quality.json").write_text(json.dumps(result.quality.to_dict(), indent=1))
        for warning in result.quality.warnings:
            print(f"warning [{warning.code}]: {warning.message}", file=sys.stderr)
    (out / "plots").mkdir(exist_ok=True)
    for r in result.rounds:
        (out / "plots" / f"gmm_round_{r.round}.png").write_bytes(gmm_histogram_png(r, tau=config.g.tau))
    print(
        f"trained {len(ids)} images with method {config.method}; flagged {int(result.flagged.sum())}; "
        f"wrote {out}"
    )
    return 0


def _mask_files(folder: Path, prefix: str) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a directory.")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.name.lower().startswith(prefix.lower())
    )
    if not files:
        raise ValueError(f"{folder}: no mask files ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def simulate(args: argparse.Namespace) -> int:
    """Streams: one mask in memory at a time (a first pass finds the empty masks), a progress bar."""
    lm = _label_map(args.num_classes)
    files = _mask_files(Path(args.masks), args.mask_prefix)

    def masks(desc: str) -> Iterator[np.ndarray]:
        for p in tqdm(files, desc=desc, unit="mask", file=sys.stderr, dynamic_ncols=True):
            yield read_mask(
                p,
                num_classes=lm.num_classes,
                mode=args.mask_mode,
                threshold=args.threshold,
                invert=args.invert_masks,
            )

    nonempty = [bool((m > 0).any()) for m in masks("read")]
    spec = PRESETS[args.preset](args.alpha)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    for p, (noisy, truth) in zip(
        files, corrupt_stream(masks("corrupt"), nonempty, spec, args.seed), strict=True
    ):
        name = f"{p.stem}.png"
        (out / name).write_bytes(mask_to_png(noisy, lm))
        entries.append({"id": p.stem, "file": name, **dataclasses.asdict(truth)})
    flagged = [e["pixel_noise"] for e in entries if e["flag"]]
    summary = {
        "preset": args.preset,
        "seed": args.seed,
        "spec": dataclasses.asdict(spec),
        "n_masks": len(entries),
        "n_corrupted": len(flagged),
        "mean_pixel_noise": float(np.mean(flagged)) if flagged else 0.0,
        "masks": entries,
    }
    (out / "truth.json").write_text(json.dumps(summary, indent=1))
    print(
        f"corrupted {len(flagged)} of {len(entries)} masks (mean pixel noise "
        f"{summary['mean_pixel_noise']:.3f}); wrote {out}"
    )
    return 0


def predict(args: argparse.Namespace) -> int:
    from gtcorrect.inference import Predictor  # heavy imports, only for this command
    from gtcorrect.model import ModelBundle

    try:
        bundle = ModelBundle.load(args.model)
    except OSError as exc:
        raise ValueError(f"{args.model}: cannot read the model file ({exc.strerror or exc}).") from exc
    predictor = Predictor(bundle, _device(args.device))
    folder = Path(args.images)
    out = Path(args.out)
    if _holds_volumes(folder):
        return _predict_volumes(predictor, folder, out, args.batch_size, args.flips)
    files = _mask_files(folder, "")
    out.mkdir(parents=True, exist_ok=True)
    summary = []
    for start in range(0, len(files), args.batch_size):
        chunk = files[start : start + args.batch_size]
        images = [read_image(p) for p in chunk]
        preds = predictor.predict(images, batch_size=args.batch_size, flips=args.flips)
        for p, pred in zip(chunk, preds, strict=True):
            (out / f"{p.stem}.png").write_bytes(mask_to_png(pred.mask, bundle.label_map))
            fractions = (
                np.bincount(pred.mask.ravel(), minlength=bundle.label_map.num_classes) / pred.mask.size
            )
            summary.append(
                {
                    "id": p.stem,
                    "mean_confidence": pred.mean_confidence,
                    "class_fractions": [float(f) for f in fractions],
                }
            )
    (out / "predictions.json").write_text(json.dumps(summary, indent=1))
    print(f"segmented {len(files)} images; wrote {out}")
    return 0


def _predict_volumes(predictor: Predictor, folder: Path, out: Path, batch_size: int, flips: bool) -> int:
    """Every NIfTI volume of ``folder`` segmented slice-wise (``flips``: each slice averaged over its
    flips): ``<volume>.nii.gz`` label volumes in the image's affine and header, and ``predictions.json``
    (voxel share of each class per volume)."""
    out.mkdir(parents=True, exist_ok=True)
    lm = predictor.bundle.label_map
    summary = []
    paths = sorted(p for p in folder.iterdir() if volumes.is_volume(p))
    for path in paths:
        volume = volumes.read_volume(path)
        preds = predictor.predict(volumes.image_slices(volume), batch_size=batch_size, flips=flips)
        labels = volumes.stack([pred.mask for pred in preds])
        (out / f"{volume.name}.nii.gz").write_bytes(volumes.label_volume_bytes(labels, volume))
        fractions = np.bincount(labels.ravel(), minlength=lm.num_classes) / labels.size
        summary.append({"id": volume.name, "class_fractions": [float(f) for f in fractions]})
    (out / "predictions.json").write_text(json.dumps(summary, indent=1))
    print(f"segmented {len(paths)} volumes slice-wise; wrote {out}")
    return 0
