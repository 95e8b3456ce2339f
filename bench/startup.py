"""How long the command line takes to start: CPU seconds (user + system) of ``gtcorrect --help`` and
``gtcorrect client --help``, the median of several runs, and which heavy modules each loads.

    python -m bench.startup                      # this checkout
    python -m bench.startup --baseline 420ba9a   # side by side with an earlier commit (a git worktree)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

from bench.worktree import REPO, checkout

COMMANDS = (["--help"], ["client", "--help"])
HEAVY = ("torch", "numpy", "sqlalchemy", "fastapi")
PROBE = (
    "import sys\n"
    "from app.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    "print('loaded:', ','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)\n"
)


def cpu_seconds(tree: Path, argv: list[str]) -> tuple[float, str]:
    """CPU time of one run of the console script's ``main(argv)`` from ``tree``, and the heavy modules it
    loaded ("" when it has no such command)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = PROBE.format(heavy=HEAVY)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    stderr = proc.stderr.read() if proc.stderr else ""
    loaded = next(
        (line[len("loaded: ") :] for line in stderr.splitlines() if line.startswith("loaded: ")), "?"
    )
    if os.waitstatus_to_exitcode(status) != 0:
        loaded = "failed"
    return usage.ru_utime + usage.ru_stime, loaded


def measure(tree: Path, runs: int) -> list[tuple[str, float, str]]:
    out = []
    for argv in COMMANDS:
        samples = [cpu_seconds(tree, argv) for _ in range(runs)]
        out.append((" ".join(["gtcorrect", *argv]), statistics.median(s for s, _ in samples), samples[-1][1]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", help="a git revision to measure side by side")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    print(f"| command | tree | CPU s (median of {args.runs}) | heavy modules loaded |")
    print("|---|---|---|---|")
    with checkout(args.baseline) if args.baseline else nullcontext(REPO) as baseline:
        trees = [("this checkout", REPO)] + ([(args.baseline, baseline)] if args.baseline else [])
        for label, tree in trees:
            for command, seconds, loaded in measure(tree, args.runs):
                print(f"| `{command}` | {label} | {seconds:.2f} | {loaded or 'none'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
