"""Load benchmark: concurrent clients against a real API server on loopback.

    python -m bench.load --clients 50 --duration 60

Starts the services and the API itself (``bench.load_setup``), seeds one project, dataset, annotation
batch and a finished job with a tiny model, then runs ``--clients`` asyncio httpx clients for
``--duration`` seconds. Each client loops over a weighted mix of image uploads, job polling (get job,
list jobs, noise report) and inference (segment a 32x32 PNG). Prints a per-endpoint table (requests,
errors, p50/p95/p99 latency, throughput) and writes it as JSON to ``bench/out/``. Every request goes to
127.0.0.1; the run stops at the deadline or after ``--max-requests``, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.load_setup import World, api_server, png, seed, services

OUT_DIR = Path(__file__).resolve().parent / "out"
Call = Callable[[httpx.AsyncClient, World, int], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Endpoint:
    name: str
    weight: float  # share of the mix
    status: int  # the status a successful call answers
    call: Call


def _upload(client: httpx.AsyncClient, world: World, n: int) -> Awaitable[httpx.Response]:
    # A new image every time (seeded by the request number), so each upload stores a new sample.
    files = [("files", (f"load-{n:07d}.png", png(10_000 + n), "image/png"))]
    return client.post(f"/v1/datasets/{world.dataset_id}/images", files=files)


def _segment(client: httpx.AsyncClient, world: World, n: int) -> Awaitable[httpx.Response]:
    files = {"file": (f"query-{n % 16}.png", png(n % 16), "image/png")}
    return client.post(f"/v1/models/{world.model_id}/segment", params={"format": "json"}, files=files)


ENDPOINTS = (
    Endpoint("POST images", 0.15, 201, _upload),
    Endpoint("GET job", 0.25, 200, lambda c, w, n: c.get(f"/v1/jobs/{w.job_id}")),
    Endpoint("GET jobs", 0.20, 200, lambda c, w, n: c.get("/v1/jobs", params={"limit": 20})),
    Endpoint(
        "GET noise-report",
        0.20,
        200,
        lambda c, w, n: c.get(f"/v1/jobs/{w.job_id}/noise-report", params={"flagged": "true"}),
    ),
    Endpoint("POST segment", 0.20, 200, _segment),
)


@dataclass
class Tally:
    """Latencies (seconds) of one endpoint's calls, and the first few errors verbatim."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def record(self, seconds: float, error: str | None) -> None:
        self.latencies.append(seconds)
        if error is not None:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(error)

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        ms = np.asarray(self.latencies, dtype=np.float64) * 1000.0
        p50, p95, p99 = (float(np.percentile(ms, q)) if ms.size else float("nan") for q in (50, 95, 99))
        return {
            "requests": int(ms.size),
            "errors": self.errors,
            "p50_ms": round(p50, 1),
            "p95_ms": round(p95, 1),
            "p99_ms": round(p99, 1),
            "throughput_rps": round(ms.size / elapsed_s, 2),
            "error_samples": self.error_samples,
        }


async def _one_client(
    seed_value: int,
    client: httpx.AsyncClient,
    world: World,
    deadline: float,
    numbers: itertools.count[int],
    max_requests: int,
    tallies: dict[str, Tally],
) -> None:
    rng = random.Random(seed_value)
    weights = [e.weight for e in ENDPOINTS]
    while time.monotonic() < deadline:
        n = next(numbers)  # shared across clients: the global request budget and unique upload names
        if n >= max_requests:
            return
        endpoint = rng.choices(ENDPOINTS, weights)[0]
        start = time.perf_counter()
        error: str | None = None
        try:
            response = await endpoint.call(client, world, n)
            if response.status_code != endpoint.status:
                error = f"{response.status_code}: {response.text[:300]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        tallies[endpoint.name].record(time.perf_counter() - start, error)


async def run_load(world: World, clients: int, duration_s: float, max_requests: int) -> dict[str, Any]:
    """``clients`` concurrent loops for ``duration_s``; returns the per-endpoint summary."""
    tallies = {e.name: Tally() for e in ENDPOINTS}
    numbers = itertools.count()
    # Idle connections expire on the client before uvicorn's 5 s keep-alive closes them on the server;
    # with equal timeouts a request can race the server's close and fail with "Server disconnected".
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0)
    async with httpx.AsyncClient(
        base_url=world.base_url, headers=world.auth, limits=limits, timeout=120.0
    ) as client:
        started = time.monotonic()
        deadline = started + duration_s
        await asyncio.gather(
            *(_one_client(i, client, world, deadline, numbers, max_requests, tallies) for i in range(clients))
        )
        elapsed = time.monotonic() - started
    endpoints = {name: tally.summary(elapsed) for name, tally in tallies.items()}
    everything = Tally(
        [x for t in tallies.values() for x in t.latencies], sum(t.errors for t in tallies.values())
    )
    return {"elapsed_s": round(elapsed, 2), "endpoints": endpoints, "total": everything.summary(elapsed)}


def table(result: dict[str, Any]) -> str:
    """The per-endpoint figures as a Markdown table."""
    lines = [
        "| endpoint | requests | errors | p50 ms | p95 ms | p99 ms | req/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [*result["endpoints"].items(), ("all", result["total"])]
    for name, s in rows:
        lines.append(
            f"| {name} | {s['requests']} | {s['errors']} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} "
            f"| {s['throughput_rps']} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop after this many requests")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/out/load-CxD.json)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.max_requests < 1 or args.workers < 1:
        parser.error("--clients, --max-requests and --workers must be >= 1 and --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or OUT_DIR / f"load-{args.clients}x{args.duration:g}.json"
    with tempfile.TemporaryDirectory(prefix="gtc-load-") as tmp:
        workdir = Path(tmp)
        api_log = workdir / "api.log"
        with services(workdir) as settings, api_server(settings, api_log, args.workers) as url:
            world = seed(settings, url)
            result = asyncio.run(run_load(world, args.clients, args.duration, args.max_requests))
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(api_log, out.with_suffix(".api.log"))  # the server's side of any error
    result |= {
        "command": " ".join(["python -m bench.load", *(argv if argv is not None else sys.argv[1:])]),
        "clients": args.clients,
        "duration_s": args.duration,
        "workers": args.workers,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # The machine may be shared: its load average says how much of it the run really had.
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
