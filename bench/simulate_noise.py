"""Peak memory and time of ``gtcorrect simulate-noise`` on the 1000 Kvasir-SEG masks, this checkout and
optionally an earlier commit side by side (run one after the other on the same machine).

    python -m bench.simulate_noise --baseline 420ba9a
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from bench.common import SHARED_DATA
from bench.worktree import REPO, checkout

MASKS = SHARED_DATA / "kvasir-seg" / "masks"


def run(tree: Path, out: Path) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one run of the command from ``tree``."""
    argv = [
        sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))",
        "simulate-noise", "--masks", str(MASKS), "--mask-mode", "binary", "--alpha", "0.5",
        "--preset", "strong", "--seed", "0", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"simulate-noise failed in {tree}")
    return time.monotonic() - start, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", help="a git revision to measure side by side")
    args = p.parse_args(argv)
    print("| tree | masks | wall s | peak RSS MB |\n|---|---|---|---|")
    n = len([f for f in MASKS.iterdir() if f.is_file()])
    with (
        tempfile.TemporaryDirectory() as tmp,
        checkout(args.baseline) if args.baseline else nullcontext(REPO) as old,
    ):
        trees = [("this checkout", REPO)] + ([(args.baseline, old)] if args.baseline else [])
        for label, tree in trees:
            wall, peak = run(tree, Path(tmp) / label.replace(" ", "-"))
            print(f"| {label} | {n} | {wall:.0f} | {peak:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
