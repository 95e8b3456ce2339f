"""Attack replay: what a hostile client and a failing dependency do to the production configuration.

    python -m bench.attack                 # every case, 60 s outages (about 15 minutes on 2 cores)
    python -m bench.attack --cases bodies,mistakes --outage-s 5

Starts the production stack: a fresh PostgreSQL database and a claimed Redis db (the machine's servers),
a SeaweedFS S3 server, ``uvicorn app.main:create_app`` and prefork Celery workers, each started as
production starts them. PostgreSQL and S3 are reached through TCP proxies in processes of their own
(``tests.support.proxy``), which the outage cases cut and restore. Cases (``--cases``):

- ``bodies``: 30 MB and 60 MB JSON bodies and a 200 MB multipart body sent with no key, while a probe
  calls ``/livez`` every 20 ms: the answer, the API's RSS growth, ``/livez`` p99.
- ``neighbour``: 20 clients (``bench.load``'s mix) alone, beside a process spinning one core (the
  control) and beside one client posting 30 MB bodies with no key in a loop: throughput kept.
- ``decode``: decompression and pixel bombs (a zip entry of an uncompressed 50 MP float32 TIFF at ratio
  ~80, the same TIFF deflated, a 7000x7000 RGB image and a 16-bit mask for it, four 50 MP requests at
  once, ``segment`` asking for a 50 MP ``npy``): the answer, the API's peak RSS growth and its RSS 5 s
  later.
- ``mistakes``: typos and bad values a client sends (unknown fields, a bool for a number, a config whose
  training memory cannot fit, a manifest mapping a mask twice, one name in NFC and NFD).
- ``outages``: the object store, then PostgreSQL, cut for ``--outage-s`` while a job trains and while
  a job is submitted: what clients get meanwhile, whether the jobs succeed, stray or missing objects.
- ``kill``: the production worker SIGKILLed (process group) mid-job and a new one started; then
  ``gtcorrect serve``'s embedded worker SIGKILLed: seconds to training again past the epoch reached.

Prints one line per case with its figure and target, writes ``bench/out/attack.json`` and, with
``--write-docs``, the table into docs/RELIABILITY.md (section ``attack``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench.attack.bombs import decode
from bench.attack.faults import kill_embedded, kill_production, outages
from bench.attack.strangers import bodies, mistakes, neighbour
from bench.attack.target import CASES, OUT_DIR, RELIABILITY, Row, target
from bench.load_setup import seed
from bench.report import write_section


def markdown(rows: list[Row], command: str) -> str:
    lines = [
        "Command:",
        "```",
        command,
        "```",
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}; the API (uvicorn, one process), a prefork "
        "Celery worker, PostgreSQL, Redis, the SeaweedFS S3 server, the proxies and the attacking clients "
        "all on it.",
        "",
        "| case | sent | answer | figure | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r.case, r.sent, r.answer, r.figure, r.target, "yes" if r.met else "**no**"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def run(cases: tuple[str, ...], workdir: Path, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []

    def report(new: list[Row]) -> None:
        for r in new:
            print(
                f"[{'met' if r.met else 'NOT MET'}] {r.case}: {r.answer}; {r.figure} (target {r.target})",
                flush=True,
            )
        rows.extend(new)

    stacked = [c for c in cases if c != "kill"] or ("kill" in cases and ["kill"])
    if stacked:
        with target(workdir / "stack") as t:
            world = seed(t.direct, t.stack.base_url)
            if "bodies" in cases:
                report(bodies(t, args.settle))
            if "neighbour" in cases:
                report(neighbour(world, args.clients, args.load_s))
            if "decode" in cases:
                report(decode(t, world, args.settle))
            if "mistakes" in cases:
                report(mistakes(world))
            if "outages" in cases:
                report(outages(t, args.outage_s))
            if "kill" in cases:
                report([kill_production(t)])
    if "kill" in cases:
        report([kill_embedded(workdir / "serve")])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.attack", description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--outage-s", type=float, default=60.0, help="length of each outage (default 60)")
    p.add_argument("--clients", type=int, default=20, help="well-behaved clients in 'neighbour' (default 20)")
    p.add_argument("--load-s", type=float, default=30.0, help="seconds of each load run (default 30)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds before idle and after RSS readings")
    p.add_argument("--write-docs", action="store_true", help="write the table into docs/RELIABILITY.md")
    args = p.parse_args(argv)
    cases = tuple(c.strip() for c in args.cases.split(",") if c.strip())
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    command = "python -m bench.attack " + shlex.join(sys.argv[1:] if argv is None else argv)
    # A SIGTERM (timeout, CI) unwinds like Ctrl-C, so that the servers it started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="gtc-attack-") as tmp:
        workdir = Path(tmp)
        (workdir / "stack").mkdir()
        (workdir / "serve").mkdir()
        rows = run(cases, workdir, args)
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "attack.json").write_text(
        json.dumps({"command": command, "rows": [asdict(r) for r in rows]}, indent=1)
    )
    table = markdown(rows, command)
    print(table)
    if args.write_docs:
        write_section("attack", table, RELIABILITY)
    return 0 if all(r.met for r in rows) else 1
