"""Engine commands: ``train``, ``simulate-noise`` and ``predict`` on folders of image files.

``python -m gtcorrect`` runs ``main``; the service's ``gtcorrect`` console script (``app.cli``) calls
``add_commands`` and adds its own serve/worker commands next to these. The work is in
``gtcorrect.cli_commands``, imported only when a command runs: ``--help`` starts without torch.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any

from gtcorrect.config import METHODS, PRESETS, NoiseRegime

# The columns of the service's noise report that a folder run has (GET /v1/jobs/{id}/noise-report).
REPORT_FIELDS = (
    "file_name",
    "clean_probability",
    "flagged",
    "loss",
    "round_decided",
    "held_out",
    "decided_by",
    "correction_proposed",
    "withheld_because",
)


def _add_mask_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mask-mode",
        choices=("index", "binary"),
        default="index",
        help="binary: grey > threshold is foreground (JPEG masks); index: class values",
    )
    p.add_argument("--threshold", type=int, default=127, help="grey threshold for --mask-mode binary")
    p.add_argument("--invert-masks", action="store_true", help="foreground is dark (BU-BIL)")
    p.add_argument("--num-classes", type=int, default=2, help="classes including background")
    p.add_argument("--mask-prefix", default="", help="mask file name prefix, e.g. seg_ for BU-BIL")


def _run(command: str) -> Callable[[argparse.Namespace], int]:
    """The command's function in ``gtcorrect.cli_commands``, imported when it is called."""

    def run(args: argparse.Namespace) -> int:
        return int(getattr(import_module("gtcorrect.cli_commands"), command)(args))

    return run


def add_commands(subparsers: Any) -> None:
    """Register train, simulate-noise and predict on an ``argparse`` subparsers object."""
    t = subparsers.add_parser("train", help="train on a folder of images and (noisy) masks")
    t.add_argument("--images", required=True)
    t.add_argument("--masks", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--preset", choices=tuple(PRESETS), help="a named starting point (before --config)")
    t.add_argument("--config", help="a partial TrainConfig (JSON); --method/--size/--seed override it")
    t.add_argument("--method", choices=METHODS)
    t.add_argument("--size", type=int, help="training size S (default from the config: 128)")
    t.add_argument("--seed", type=int)
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    t.add_argument(
        "--annotators",
        help="CSV of mask,annotator (mask file name or stem): the annotator check looks for a biased one",
    )
    _add_mask_options(t)
    t.set_defaults(func=_run("train"))

    s = subparsers.add_parser("simulate-noise", help="write a noisy copy of a mask folder plus truth.json")
    s.add_argument("--masks", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--alpha", type=float, default=0.5, help="fraction of masks to corrupt")
    s.add_argument("--preset", choices=typing.get_args(NoiseRegime), default="moderate")
    s.add_argument("--seed", type=int, default=0)
    _add_mask_options(s)
    s.set_defaults(func=_run("simulate"))

    p = subparsers.add_parser("predict", help="segment a folder of images with a trained model")
    p.add_argument("--model", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--flips", action="store_true", help="average over each image and its flips (4 forward passes)"
    )
    p.set_defaults(func=_run("predict"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m gtcorrect``; returns the exit status (2 for bad input)."""
    parser = argparse.ArgumentParser(prog="python -m gtcorrect", description=__doc__.splitlines()[0])
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
