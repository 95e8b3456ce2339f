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
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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
    trees = [("this checkout", REPO)]
    with tempfile.TemporaryDirectory(prefix="gtc-startup-") as tmp:
        if args.baseline:
            worktree = Path(tmp) / "baseline"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(worktree), args.baseline],
                check=True,
            )
            trees.append((args.baseline, worktree))
        try:
            print(f"| command | tree | CPU s (median of {args.runs}) | heavy modules loaded |")
            print("|---|---|---|---|")
            for label, tree in trees:
                for command, seconds, loaded in measure(tree, args.runs):
                    print(f"| `{command}` | {label} | {seconds:.2f} | {loaded or 'none'} |")
        finally:
            if args.baseline:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
