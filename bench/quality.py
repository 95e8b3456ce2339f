"""Quality benchmark: G-T correcting against its peers on Kvasir-SEG with simulated noise (and BU-BIL).

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 python -m bench.quality --quick

Every method trains the same network with the same schedule on the same noisy files; validation and
test masks stay clean. Results go to bench/out/quality-<timestamp>.json (``--resume FILE`` continues a
killed run, skipping the runs already in it) and a mean ± std table into BENCHMARKS.md. See
bench/README.md for the plans, the budgets and what every column means.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import OUT_DIR, ResultLog, Split, run_all, synthetic_split, train_and_score
from bench.plan import (
    ABLATIONS,
    SCHEDULES,
    VARIANTS,
    RunSpec,
    Schedule,
    default_plan,
    expand,
    make_config,
    quick_plan,
)
from bench.report import (
    BENCHMARKS,
    annotator_table,
    class_table,
    damage_table,
    flips_table,
    quality_table,
    section,
    size_table,
    table,
    type_table,
    write_section,
)
from gtcorrect.noise import PRESETS, simulate_noise


@dataclasses.dataclass
class Noisy:
    """The noisy training masks of one (regime, alpha, seed): masks (N, S, S), truth (N,) bool and the
    corruption type of each mask (None where clean)."""

    masks: np.ndarray
    truth: np.ndarray
    summary: dict[str, Any]
    types: list[str | None]


def make_noise(split: Split, regime: str, alpha: float, seed: int) -> Noisy:
    """Corrupt the training masks at the training size (NoiseSpec lengths are at 128 px and scale)."""
    if regime == "none" or alpha == 0:
        n = split.train_masks.shape[0]
        return Noisy(
            split.train_masks.copy(),
            np.zeros(n, dtype=bool),
            {"mean_pixel_noise": None, "n_corrupted": 0},
            [None] * n,
        )
    if regime not in PRESETS:
        raise ValueError(f"unknown noise regime {regime!r}; choose from {sorted(PRESETS)}.")
    result = simulate_noise(list(split.train_masks), PRESETS[regime](alpha), seed)
    truth = np.array([t.flag for t in result.truth])
    by_type: dict[str, list[float]] = {}
    for t in result.truth:
        if t.flag and t.type is not None:
            by_type.setdefault(t.type, []).append(t.pixel_noise)
    noise = [t.pixel_noise for t in result.truth if t.flag]
    summary = {
        "mean_pixel_noise": float(np.mean(noise)) if noise else None,
        "n_corrupted": int(truth.sum()),
        "by_type": {k: {"n": len(v), "pixel_noise": float(np.mean(v))} for k, v in sorted(by_type.items())},
    }
    types = [t.type if t.flag else None for t in result.truth]
    return Noisy(np.stack(result.masks).astype(np.int64), truth, summary, types)


def jobs_for(
    plan: Sequence[RunSpec], split: Split, schedule: Schedule, device: str, clean_annotators: int = 1
) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """One thunk per run; the noise of a (regime, alpha, seed) is simulated once and shared. In the
    systematic regimes the clean masks are shared out in turn among ``clean_annotators`` annotators."""
    cache: dict[tuple[str, float, int], Noisy] = {}

    def noise(spec: RunSpec) -> Noisy:
        key = (spec.regime, spec.alpha, spec.seed)
        if key not in cache:
            cache[key] = make_noise(split, spec.regime, spec.alpha, spec.seed)
        return cache[key]

    def thunk(spec: RunSpec) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            noisy = noise(spec)
            given = split.train_masks if spec.method == "clean" else noisy.masks
            config = make_config(spec, schedule, split.size)
            # The systematic regime is the biased annotator: the corrupted masks are theirs, the others
            # another annotator's; the job is told who drew what, as the service tells it.
            names = None
            if spec.regime.startswith("systematic") and spec.method != "clean":
                turn = np.cumsum(~noisy.truth) % clean_annotators
                names = [
                    "noisy" if t else "clean" if clean_annotators == 1 else f"clean-{k + 1}"
                    for t, k in zip(noisy.truth, turn, strict=True)
                ]
            record = train_and_score(config, split, given, noisy.truth, device, noisy.types, names)
            record.update(spec=dataclasses.asdict(spec), noise=noisy.summary, config=config.to_dict())
            return record

        return go

    return [(spec.key, thunk(spec)) for spec in plan]


def build_plan(args: argparse.Namespace) -> list[RunSpec]:
    variants = list(args.variants) + (list(ABLATIONS) if args.ablations else [])
    if args.regimes or args.alphas or args.methods:
        return expand(
            args.regimes or ["strong"],
            args.alphas if args.alphas is not None else [0.5],
            args.methods or ["clean", "noisy", "gmm_select", "coteaching", "gt"],
            args.seeds,
            variants,
        )
    return (quick_plan if args.plan == "quick" else default_plan)(args.seeds, variants)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="quick plan and schedule (about 10 min), 1 seed")
    p.add_argument("--smoke", action="store_true", help="synthetic 32 px data, seconds; for the tests")
    p.add_argument("--bu-bil", action="store_true", help="the BU-BIL real-annotator experiment instead")
    p.add_argument(
        "--dataset",
        choices=["kvasir", "jsrt", "lidc", "lidc-consensus", "lidc-every-reader", "hippocampus"],
        default="kvasir",
        help="kvasir (default); jsrt (6 labels, 173 training images); lidc (reader mask-0 as clean masks); "
        "lidc-consensus (the readers' consensus as clean masks); lidc-every-reader (the consensus judged, "
        "every marking reader's mask learnt from, one per crop and epoch); "
        "hippocampus (MR volumes, slice-wise)",
    )
    p.add_argument("--size", type=int, default=None, help="training size (default 128; 64 for --bu-bil)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 (0 with --quick)")
    p.add_argument("--regimes", nargs="+", choices=sorted(PRESETS), help="custom grid: noise regimes")
    p.add_argument("--alphas", type=float, nargs="+", help="custom grid: noise rates")
    p.add_argument("--methods", nargs="+", choices=["clean", "noisy", "gmm_select", "coteaching", "gt"])
    p.add_argument("--ablations", action="store_true", help="add the G-T ablations at alpha 0.5")
    p.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS), help="more G-T variants")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), help="override the plan's schedule")
    p.add_argument("--n-train", type=int, help="override the schedule's training-set size")
    p.add_argument(
        "--volumes", type=int, help="hippocampus: training volumes of the 136 (default 40; 136: every one)"
    )
    p.add_argument(
        "--context",
        type=int,
        default=0,
        help="hippocampus: neighbouring slices on either side as channels (0: none; 1: three channels)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    p.add_argument("--out", type=Path, help="JSON file (default bench/out/quality-<timestamp>.json)")
    p.add_argument("--resume", type=Path, help="continue this JSON file, skipping runs already in it")
    p.add_argument("--merge", type=Path, nargs="+", default=[], help="first copy in the runs of these logs")
    p.add_argument("--render-only", action="store_true", help="train nothing: the table of the runs logged")
    p.add_argument("--benchmarks", type=Path, default=BENCHMARKS, help="markdown file to update")
    p.add_argument("--no-markdown", action="store_true", help="do not touch the markdown file")
    p.add_argument(
        "--clean-annotators",
        type=int,
        default=1,
        help="systematic regimes: how many annotators share the clean masks (the job is told who drew what)",
    )
    p.add_argument("--section", help="markdown section name (default: smoke, quick, default or custom)")
    args = p.parse_args(argv)
    args.plan = "quick" if args.quick else "default"
    custom = bool(args.regimes or args.alphas or args.methods)
    args.section = args.section or ("smoke" if args.smoke else "custom" if custom else args.plan)
    if args.seeds is None:
        args.seeds = [0] if (args.quick or args.smoke) else [0, 1]
    if args.smoke and args.schedule is None:
        args.schedule = "smoke"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.bu_bil:
        from bench.bu_bil import main_bu_bil

        return main_bu_bil(args, argv)
    schedule = SCHEDULES[args.schedule or args.plan]
    if args.n_train:
        schedule = dataclasses.replace(schedule, n_train=args.n_train)
    size = args.size or (32 if args.smoke else 128)
    if args.smoke:
        split = synthetic_split(schedule.n_train, 8, 12, size=size)
    elif args.dataset == "jsrt":
        from bench.jsrt import jsrt_split

        split = jsrt_split(size)
    elif args.dataset == "hippocampus":
        from bench.hippocampus import TRAIN_VOLUMES, hippocampus_split

        split = hippocampus_split(size, train_volumes=args.volumes or TRAIN_VOLUMES, context=args.context)
    elif args.dataset.startswith("lidc"):
        from bench.lidc import lidc_split

        reader = 0 if args.dataset == "lidc" else None
        split = lidc_split(size, reader, readers_learnt=args.dataset == "lidc-every-reader")[0]
    else:
        from bench.kvasir import kvasir_split

        split = kvasir_split(size, schedule.n_train)
    if args.dataset != "kvasir":  # every image of the dataset's training part
        schedule = dataclasses.replace(schedule, n_train=len(split.train_ids))
    settings = {"dataset": split.name, "size": size, **dataclasses.asdict(schedule)}
    path = args.resume or args.out or OUT_DIR / f"quality-{time.strftime('%Y%m%d-%H%M%S')}.json"
    log = ResultLog(path, settings)
    for other in args.merge:
        log.absorb(other)
    plan = build_plan(args)
    print(f"{len(plan)} runs, log {path}", flush=True)
    if args.render_only:
        missing = [spec.key for spec in plan if not log.has(spec.key)]
        print(f"rendering only; not in the log: {', '.join(missing) or 'none'}", flush=True)
    else:
        run_all(
            jobs_for(plan, split, schedule, args.device, args.clean_annotators),
            log,
            lambda s: print(s, flush=True),
        )
    keys = {spec.key for spec in plan}
    runs = {k: v for k, v in log.runs.items() if k in keys}
    body = table(runs)
    extras = (
        ("Test Dice per label (each seed)", class_table(runs)),
        (
            "Test Dice with the network averaged over each test image's flips (a `segment` request with "
            "`flips=true`; each seed)",
            flips_table(runs),
        ),
        (
            "Self-assessment against the truth (what the job reports about itself, means over seeds; "
            "'k/n': in k of n seeds)",
            quality_table(runs),
        ),
        (
            "Recognition by corruption type (share flagged / AUROC against the clean masks / mean pixel noise"
            " of the type, means over seeds)",
            type_table(runs),
        ),
        (
            "Recognition by damage (the wrong masks by their Dice with the true mask: below 0.7, badly "
            "wrong, or mild; how many / share flagged / AUROC against the clean masks, means over seeds)",
            damage_table(runs),
        ),
        (
            "Annotator report (gtcorrect.annotators) with the corrupted masks as annotator 'noisy' and the "
            "others as 'clean'",
            annotator_table(runs),
        ),
        (
            "Recognition by object size (quintiles of the true mask area; AUROC / share of the clean masks"
            " flagged / median predicted ÷ true area of the clean masks, means over seeds)",
            size_table(runs),
        ),
    )
    for title, extra in extras:
        if extra:
            body += f"\n\n{title}:\n\n{extra}"
    print(body)
    if not args.no_markdown:
        command = _command(argv, path)
        names = {
            "kvasir": "Kvasir-SEG",
            "jsrt": "JSRT",
            "lidc": "LIDC (reader mask-0)",
            "lidc-consensus": "LIDC (the readers' consensus)",
            "lidc-every-reader": "LIDC (every reader learnt, the consensus judged)",
            "hippocampus": "Hippocampus MR (slice-wise)",
        }
        title = "Smoke (synthetic data)" if args.smoke else f"{names[args.dataset]}: {args.section}"
        notes = [f"JSON: `{_rel(path)}`. Test figures at the training size ({size} px)."]
        text = section(title, command, log.data, body, notes)
        write_section(f"quality-{args.section}", text, args.benchmarks)
    return 0


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(BENCHMARKS.parent))
    except ValueError:
        return str(path)


def _command(argv: Sequence[str] | None, path: Path) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--resume" not in args and "--out" not in args:
        args += ["--out", _rel(path)]
    env = "MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184"
    return f"{env} python -m bench.quality {shlex.join(args)}"


if __name__ == "__main__":
    raise SystemExit(main())
