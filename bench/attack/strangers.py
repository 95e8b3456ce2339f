"""Strangers and careless clients: unauthenticated bodies, a hostile neighbour, mistakes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np

from bench.attack.target import BODY_GROWTH_MB, LIVEZ_P99_MS, MB, THROUGHPUT_KEPT, Row, Target, png_bytes
from bench.load import run_load
from bench.load_setup import World
from bench.memory import peak_rss, rss_mb


def _post_unauthenticated(base_url: str, path: str, **kwargs: Any) -> str:
    """The status, or how the connection ended when the server closed it before the body was sent."""
    try:
        with httpx.Client(base_url=base_url, timeout=120) as client:
            return str(client.post(path, **kwargs).status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def _probe_livez(base_url: str, every_s: float, ready: Any, done: Any, out: Any) -> None:
    latencies: list[float] = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        client.get("/livez")
        ready.set()
        while not done.is_set():
            start = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                client.get("/livez")
            latencies.append((time.perf_counter() - start) * 1000)
            time.sleep(every_s)
    out.send(latencies)


@contextlib.contextmanager
def livez_probe(base_url: str, every_s: float = 0.02) -> Iterator[list[float]]:
    """``/livez`` called every ``every_s`` while the block runs, from a process of its own (this one's
    threads build the attack's bodies); yields the list that holds the latencies (ms) afterwards."""
    context = multiprocessing.get_context("spawn")
    ready, done, (receive, send) = context.Event(), context.Event(), context.Pipe(duplex=False)
    args = (base_url, every_s, ready, done, send)
    process = context.Process(target=_probe_livez, args=args, daemon=True)
    process.start()
    latencies: list[float] = []
    try:
        if not ready.wait(60):
            raise RuntimeError("the /livez probe did not start")
        time.sleep(0.5)
        yield latencies
    finally:
        done.set()
        latencies.extend(receive.recv())
        process.join()


def json_bomb(mb: int) -> bytes:
    return b'{"dataset_id": "' + b"x" * (mb * MB) + b'"}'


def bodies(t: Target, settle_s: float) -> list[Row]:
    base = t.stack.base_url
    json_headers = {"Content-Type": "application/json"}
    multipart = {"files": ("big.png", b"\0" * (200 * MB), "image/png")}
    requests: list[tuple[str, str, str, dict[str, Any]]] = [
        (
            f"{mb} MB JSON",
            f"POST /v1/jobs, {mb} MB JSON, no key, 3 times",
            "/v1/jobs",
            {"content": json_bomb(mb), "headers": json_headers},
        )
        for mb in (30, 60)
    ]
    requests.append(
        (
            "200 MB multipart",
            "POST .../images, 200 MB multipart, no key, 3 times",
            f"/v1/datasets/{uuid.uuid4()}/images",
            {"files": multipart},
        )
    )
    rows = []
    for name, sent, path, body in requests:
        time.sleep(settle_s)
        idle = rss_mb(t.pid)
        with peak_rss(t.pid) as peak, livez_probe(base) as latencies:
            time.sleep(0.5)
            start = time.perf_counter()
            answers = [_post_unauthenticated(base, path, **body) for _ in range(3)]
            seconds = (time.perf_counter() - start) / 3
            time.sleep(0.5)
        growth = peak() - idle
        p99 = float(np.percentile(latencies, 99))
        met = growth < BODY_GROWTH_MB and p99 < LIVEZ_P99_MS and all(a in ("401", "413") for a in answers)
        rows.append(
            Row(
                f"unauthenticated {name}",
                sent,
                f"{'/'.join(sorted(set(answers)))} in {seconds:.2f} s",
                f"+{growth:.0f} MB, /livez p99 {p99:.0f} ms ({len(latencies)} calls)",
                f"401/413, < {BODY_GROWTH_MB:.0f} MB, p99 < {LIVEZ_P99_MS:.0f} ms",
                met,
            )
        )
    return rows


def _hostile(base_url: str, done: Any, out: Any) -> None:
    """One client posting 30 MB JSON bodies with no key in a loop until ``done``; sends its answers."""
    body, answers = json_bomb(30), []
    while not done.is_set():
        headers = {"Content-Type": "application/json"}
        answers.append(_post_unauthenticated(base_url, "/v1/jobs", content=body, headers=headers))
    out.send(answers)


def _busy(_: str, done: Any, out: Any) -> None:
    """The control: a process that only spins one core until ``done``, talking to nobody."""
    spins = 0
    while not done.is_set():
        spins += 1
    out.send([])


def _load_beside(
    world: World, clients: int, seconds: float, other: Callable[..., None]
) -> tuple[float, list[str]]:
    """The clients' throughput (req/s) while ``other`` runs in a process of its own; its answers."""
    context = multiprocessing.get_context("spawn")
    done, (receive, send) = context.Event(), context.Pipe(duplex=False)
    process = context.Process(target=other, args=(world.base_url, done, send), daemon=True)
    process.start()
    try:
        time.sleep(3.0)  # it imports this module first
        load = asyncio.run(run_load(world, clients, seconds, 10**9))
    finally:
        done.set()
        answers = receive.recv()
        process.join()
    if load["total"]["errors"]:
        raise RuntimeError(f"well-behaved clients got errors: {load['total']}")
    return float(load["total"]["throughput_rps"]), answers


def neighbour(world: World, clients: int, seconds: float) -> list[Row]:
    """The well-behaved clients' throughput alone, beside a process spinning one core (the control: what
    any process taking a core costs on this machine) and beside the hostile client (a process of its own,
    as it would be on another machine, but here it takes one of the same cores)."""
    alone = asyncio.run(run_load(world, clients, seconds, 10**9))["total"]["throughput_rps"]
    control, _ = _load_beside(world, clients, seconds, _busy)
    beside, hostile = _load_beside(world, clients, seconds, _hostile)
    kept = beside / control
    return [
        Row(
            "20 clients beside a hostile one",
            f"{clients} clients x {seconds:.0f} s (bench.load mix) alone, beside a process spinning a core, "
            f"and beside one client posting 30 MB JSON with no key in a loop ({len(hostile)} posts: "
            f"{'/'.join(sorted(set(hostile)))})",
            f"{alone:.1f} req/s alone, {control:.1f} beside the spinning process, {beside:.1f} beside the "
            f"attacker ({beside / alone:.2f} of alone); 0 errors",
            f"{kept:.2f} of the throughput kept (attacker / spinning process)",
            f">= {THROUGHPUT_KEPT}",
            kept >= THROUGHPUT_KEPT,
        )
    ]


def mistakes(world: World) -> list[Row]:
    client = httpx.Client(base_url=world.base_url, headers=world.auth, timeout=60)
    dataset, job = world.dataset_id, world.job_id
    mask = png_bytes(np.full((32, 32), 1, dtype=np.uint8))
    manifest = b"mask,sample\nm.png,seed00.png\nm.png,seed01.png\n"
    nfc, nfd = unicodedata.normalize("NFC", "\u00e9.png"), unicodedata.normalize("NFD", "\u00e9.png")
    image = png_bytes(np.zeros((32, 32, 3), dtype=np.uint8))
    huge = {
        "image_size": 1024,
        "batch_size": 256,
        "net": {"channels": [512] * 5, "strides": [2] * 4, "num_res_units": 8},
    }
    cases: list[tuple[str, Callable[[], httpx.Response], str]] = [
        (
            'job with "confg"',
            lambda: client.post("/v1/jobs", json={"dataset_id": dataset, "confg": {}}),
            "confg",
        ),
        (
            'job with "presett"',
            lambda: client.post("/v1/jobs", json={"dataset_id": dataset, "presett": "quick"}),
            "presett",
        ),
        (
            "min_noise_probability: false",
            lambda: client.post(
                f"/v1/jobs/{job}/decisions/bulk",
                json={"rule": "accept_proposed_above", "min_noise_probability": False},
            ),
            "min_noise_probability",
        ),
        (
            "a config too big to train (1024 px, batch 256, 5 levels of 512 channels, 8 residual units)",
            lambda: client.post("/v1/jobs", json={"dataset_id": dataset, "config": huge}),
            "batch_size",
        ),
        (
            "a manifest mapping one mask to two samples",
            lambda: client.post(
                f"/v1/datasets/{dataset}/annotation-batches",
                data={"annotator": "typo"},
                files=[
                    ("files", ("manifest.csv", manifest, "text/csv")),
                    ("files", ("m.png", mask, "image/png")),
                ],
            ),
            "m.png",
        ),
        (
            "\u00e9.png in NFC and in NFD in one upload",
            lambda: client.post(
                f"/v1/datasets/{dataset}/images",
                files=[("files", (nfc, image, "image/png")), ("files", (nfd, image, "image/png"))],
            ),
            nfc,
        ),
    ]
    rows = []
    for sent, send, field in cases:
        before = client.get(f"/v1/datasets/{dataset}").json()
        response = send()
        after = client.get(f"/v1/datasets/{dataset}").json()
        body = response.json() if response.headers.get("content-type", "").endswith("json") else {}
        named = field in json.dumps(body, ensure_ascii=False)
        detail = str(body.get("field") or body.get("detail") or "")[:120]
        unchanged = before == after
        rows.append(
            Row(
                "mistake",
                sent,
                f"{response.status_code}: {detail}",
                f"names {field!r}: {_yes(named)}; dataset unchanged: {_yes(unchanged)}",
                "422 naming it, nothing stored",
                response.status_code == 422 and named and unchanged,
            )
        )
    client.close()
    return rows


def _yes(value: bool) -> str:
    return "yes" if value else "no"
