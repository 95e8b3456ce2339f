"""Speed benchmark: where users wait, side by side in one run on one machine.

    python -m bench.speed                 # 128 and 256 px, the figures in BENCHMARKS.md
    python -m bench.speed --smoke         # 32 px, a few requests: checks the harness (the tests run it)
    python -m bench.speed --engine-only   # no services (bench/gpu.sh on a GPU machine): in-process, training

Starts the services and the API as ``bench.load`` does (``bench.load_setup``: Postgres, Redis, a SeaweedFS
S3 server, ``uvicorn`` as a subprocess) and registers one model per size, a default-architecture UNet
(untrained: its speed is a trained one's). Then, for a 622 x 528 JPEG (Kvasir-SEG's typical size):

- **latency** per size: the service (``POST /v1/models/{id}/segment``, one client, keep-alive) against
  the same work in-process (decode, the model's ``MicroBatcher``, PNG encoding: what the route calls),
  and against a second API that reads the key and the model from the database on every request
  (``GTC_LOOKUP_CACHE_SECONDS=0``), the three alternated call by call so that all run on the machine as
  it is with the services up; the in-process path alone before the services start, and the network's
  forward pass; p50 and p95 of ``--requests`` calls each;
- **concurrency**: images/s with 1 client and with ``--clients`` clients (threads, one connection each),
  and the same clients against a second API that runs every image alone (no micro-batching);
- **batch**: ``POST .../segment-batch`` with ``--batch`` images in one call against as many single calls;
- **ingest**: masks/s of one annotation-batch upload of ``--ingest`` masks, in S3 mode (this stack) and in
  embedded mode (``gtcorrect serve``: SQLite and a local folder);
- **training**: G-T against plain training (method ``noisy``) for the same epochs, in-process.

Prints the tables, writes the JSON to ``bench/out/speed-<time>.json`` (``--out``) and the section
``speed`` of BENCHMARKS.md (``--no-markdown`` leaves it alone).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

from app.services import inference
from bench.common import machine, synthetic_split
from bench.load_setup import TINY_NET, World, api_server, png, seed, services, untrained_bundle
from bench.report import BENCHMARKS, markdown_table, write_section
from gtcorrect.config import AugmentConfig, GStageConfig, NetConfig, TrainConfig, TStageConfig
from gtcorrect.data import prepare_images, read_image
from gtcorrect.inference import Predictor
from gtcorrect.model import ModelBundle
from gtcorrect.trainer import fit
from gtcorrect.types import TrainingData
from tests.support.processes import embedded_serve

OUT_DIR = Path(__file__).resolve().parent / "out"
COMMAND = "python -m bench.speed"
IMAGE_HW = (528, 622)  # height, width: Kvasir-SEG's most common frame


def photo(height: int, width: int, seed: int = 0) -> bytes:
    """A seeded smooth colour image with a blob, as a quality-90 JPEG (compresses like an endoscopy frame)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    base = np.stack([np.sin(6 * yy + c) * np.cos(5 * xx - c) for c in range(3)], axis=-1)
    blob = np.exp(-(((yy - 0.45) ** 2 + (xx - 0.55) ** 2) / 0.02))[..., None]
    pixels = 120 + 60 * base + 50 * blob + rng.normal(0, 6, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(1000.0 * s for s in seconds)
    return {
        "n": len(ms),
        "p50_ms": statistics.median(ms),
        "p95_ms": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
    }


def walls(call: Callable[[], object], n: int, warmup: int) -> list[float]:
    """Wall seconds of ``n`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def timed(call: Callable[[], object], n: int, warmup: int = 3) -> dict[str, float]:
    return percentiles(walls(call, n, warmup))


def _ok(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.text[:500]}")
    return response


def _in_process(served: inference.MicroBatcher, image: bytes, flips: bool = False) -> Callable[[], None]:
    """One call of the in-process path: what the route does after the upload (decode, the model's
    ``MicroBatcher``, PNG encoding); ``flips``: a request with ``flips=true``."""

    def call() -> None:
        prediction = served.segment(read_image(image), flips)
        inference.encode(prediction, served.predictor, uuid.UUID(int=0), "png")

    return call


def engine_latency(model: ModelBundle, image: bytes, n: int, device: str) -> dict[str, Any]:
    """The in-process path and the forward pass alone for one image on ``device``, ``n`` calls each."""
    served = inference.MicroBatcher(Predictor(model, device))
    x = torch.from_numpy(prepare_images([read_image(image)], size=model.image_size, channels=3)).to(device)

    def forward() -> None:
        with torch.inference_mode():
            served.predictor.network(x)
        if x.is_cuda:
            torch.cuda.synchronize()

    try:
        paired = alternated(
            {"plain": _in_process(served, image), "flips": _in_process(served, image, True)}, n
        )
        return {
            "in_process": timed(_in_process(served, image), n),
            "forward": timed(forward, n),
            "flips": paired,
        }
    finally:
        served.close()


def alternated(calls: dict[str, Callable[[], object]], n: int) -> dict[str, dict[str, float]]:
    """``n`` timed calls of each of ``calls``, alternated (the order reversed every round, the first 3
    rounds warming up) so that all see the machine as it is: their percentiles by name."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(n + 3):
        for name in calls if i % 2 == 0 else reversed(calls):
            start = time.perf_counter()
            calls[name]()
            if i >= 3:
                seconds[name].append(time.perf_counter() - start)
    return {name: percentiles(values) for name, values in seconds.items()}


def service_latency(
    worlds: dict[str, World], model: ModelBundle, image: bytes, n: int
) -> dict[str, dict[str, float]]:
    """``POST /v1/models/{id}/segment`` with the image (one client each, keep-alive) to each API of
    ``worlds`` and the in-process path with the same model on the CPU, ``n`` calls each, alternated (the
    order reversed every round) so that all see the machine as it is while the services run:
    ``{name: ..., "in_process": ...}``."""
    served = inference.MicroBatcher(Predictor(model, "cpu"))
    with contextlib.ExitStack() as stack:
        stack.callback(served.close)
        calls: dict[str, Callable[[], object]] = {}
        for name, world in worlds.items():
            client = stack.enter_context(
                httpx.Client(base_url=world.base_url, headers=world.auth, timeout=120.0)
            )
            url = f"/v1/models/{world.model_id}/segment"
            calls[name] = partial(_post_image, client, url, image)
        calls["in_process"] = _in_process(served, image)
        return alternated(calls, n)


def _post_image(client: httpx.Client, url: str, image: bytes) -> httpx.Response:
    return _ok(client.post(url, files={"file": ("frame.jpg", image, "image/jpeg")}))


def concurrency(world: World, image: bytes, clients: int, per_client: int) -> dict[str, Any]:
    """Images/s with one client and with ``clients`` threads, each sending ``per_client`` requests."""
    url = f"/v1/models/{world.model_id}/segment"

    def run(n_clients: int) -> dict[str, float]:
        seconds: list[float] = []
        lock = threading.Lock()

        def client_loop() -> None:
            with httpx.Client(base_url=world.base_url, headers=world.auth, timeout=300.0) as client:
                for _ in range(per_client):
                    start = time.perf_counter()
                    _post_image(client, url, image)
                    with lock:
                        seconds.append(time.perf_counter() - start)

        threads = [threading.Thread(target=client_loop) for _ in range(n_clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        if len(seconds) != n_clients * per_client:
            raise RuntimeError(f"{n_clients} clients: {len(seconds)} of {n_clients * per_client} answered")
        return {"clients": n_clients, "images_per_s": len(seconds) / wall, **percentiles(seconds)}

    run(1)  # warm-up: the model is loaded and every thread pool started
    one, many = run(1), run(clients)
    return {"one": one, "many": many, "ratio": many["images_per_s"] / one["images_per_s"]}


def batch(world: World, image: bytes, k: int, repeats: int) -> dict[str, Any]:
    """``k`` images in one segment-batch call against ``k`` single calls, images/s (best of ``repeats``)."""
    files = [("files", (f"frame{i:03d}.jpg", image, "image/jpeg")) for i in range(k)]
    single = f"/v1/models/{world.model_id}/segment"
    with httpx.Client(base_url=world.base_url, headers=world.auth, timeout=600.0) as client:

        def best(call: Callable[[], object]) -> float:
            return k / min(walls(call, repeats, warmup=1))

        batched = best(lambda: _ok(client.post(f"/v1/models/{world.model_id}/segment-batch", files=files)))
        one_by_one = best(lambda: [_ok(client.post(single, files={"file": f})) for _, f in files])
    return {"images": k, "batch_images_per_s": batched, "single_images_per_s": one_by_one}


def ingest(base_url: str, auth: dict[str, str], n: int, size: int) -> dict[str, Any]:
    """One annotation batch of ``n`` masks (``size`` px PNGs) for ``n`` uploaded images: masks/s."""
    names = [f"ingest{i:05d}.png" for i in range(n)]
    with httpx.Client(base_url=base_url, headers=auth, timeout=600.0) as client:
        body = {"name": "ingest", "label_map": {"0": "background", "1": "polyp"}}
        dataset = _ok(client.post("/v1/datasets", json=body)).json()["id"]
        images = [("files", (name, png(i, size), "image/png")) for i, name in enumerate(names)]
        _ok(client.post(f"/v1/datasets/{dataset}/images", files=images))
        masks = [("files", (name, png(i, size, grey_mask=True), "image/png")) for i, name in enumerate(names)]
        start = time.perf_counter()
        answer = _ok(
            client.post(f"/v1/datasets/{dataset}/annotation-batches", data={"annotator": "a"}, files=masks)
        ).json()
        wall = time.perf_counter() - start
    stored = answer["report"]["accepted"]
    if stored != n:
        raise RuntimeError(f"ingest stored {stored} of {n} masks: {json.dumps(answer)[:500]}")
    return {"masks": n, "size": size, "seconds": wall, "masks_per_s": n / wall}


def embedded_ingest(workdir: Path, n: int, size: int) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    with embedded_serve(workdir) as served:
        return ingest(served.base_url, {"Authorization": f"Bearer {served.key}"}, n, size)


def training(size: int, n_images: int, epochs: int, net: NetConfig, device: str) -> dict[str, Any]:
    """Wall seconds of G-T and of plain training (``noisy``) for the same epochs, same data, in-process."""
    split = synthetic_split(n_images, 0, 0, size=size, seed=0)
    data = TrainingData(split.train_images, split.train_masks, split.train_ids)
    warmup, rounds, per_round = epochs // 2, 2, max(1, epochs // 8)
    t_epochs = epochs - warmup - rounds * per_round
    gt = TrainConfig(
        method="gt",
        image_size=size,
        epochs=epochs,
        net=net,
        augment=AugmentConfig(enabled=True),
        g=GStageConfig(
            warmup_epochs=warmup, rounds_max=rounds, epochs_per_round=per_round, stop_change_frac=0.0
        ),
        t=TStageConfig(epochs=t_epochs),
    )
    out: dict[str, Any] = {"images": n_images, "size": size, "epochs": epochs}
    fit(replace(gt, method="noisy", epochs=1), data, device=device)  # the first fit pays for the imports
    for name, config in (("plain", replace(gt, method="noisy")), ("gt", gt)):
        start = time.perf_counter()
        result = fit(config, data, device=device)
        out[f"{name}_s"] = time.perf_counter() - start
        out[f"{name}_epochs"] = len(result.history)
    out["ratio"] = out["gt_s"] / out["plain_s"]
    return out


def _ms(row: dict[str, float] | None) -> str:
    return "–" if row is None else f"{row['p50_ms']:.1f} / {row['p95_ms']:.1f}"


def _ratio(row: dict[str, float] | None, base: dict[str, float] | None) -> str:
    return "–" if row is None or base is None else f"{row['p50_ms'] / base['p50_ms']:.2f}x"


def _service_tables(log: dict[str, Any]) -> list[str]:
    """Concurrency, batch and ingest (absent with ``--engine-only``)."""
    if "concurrency" not in log:
        return []
    c, b = log["concurrency"], log["batch"]
    one, many, alone = c["one"], c["many"], c["many_alone"]
    batch_ratio = b["batch_images_per_s"] / b["single_images_per_s"]
    return [
        markdown_table(
            [
                f"at {c['size']} px",
                "1 client",
                f"{many['clients']} clients",
                "ratio",
                f"{many['clients']} clients, each image alone (GTC_INFER_MAX_BATCH=1)",
            ],
            [
                [
                    "images/s",
                    f"{one['images_per_s']:.1f}",
                    f"{many['images_per_s']:.1f}",
                    f"{c['ratio']:.2f}x",
                    f"{alone['images_per_s']:.1f}",
                ],
                ["p50 / p95 ms", _ms(one), _ms(many), "", _ms(alone)],
            ],
        ),
        markdown_table(
            [
                f"at {b['size']} px",
                f"one segment-batch call of {b['images']}",
                f"{b['images']} single calls",
                "ratio",
            ],
            [
                [
                    "images/s",
                    f"{b['batch_images_per_s']:.1f}",
                    f"{b['single_images_per_s']:.1f}",
                    f"{batch_ratio:.2f}x",
                ]
            ],
        ),
        markdown_table(
            ["ingest: one annotation batch", "masks", "mask size", "seconds", "masks/s"],
            [
                [mode, str(r["masks"]), f"{r['size']} px", f"{r['seconds']:.2f}", f"{r['masks_per_s']:.0f}"]
                for mode, r in log["ingest"].items()
            ],
        ),
    ]


def render(log: dict[str, Any]) -> str:
    m, s, t = log["machine"], log["settings"], log["training"]
    latency_rows = []
    for size, r in log["latency"].items():
        service, db, paired = r.get("service"), r.get("service_db_lookups"), r.get("in_process_paired")
        latency_rows.append(
            [
                f"{size} px",
                _ms(service),
                _ms(paired),
                _ms(r["in_process"]),
                _ms(r["forward"]),
                _ratio(service, paired),
                _ms(db),
                _ratio(db, paired),
            ]
        )
    stack = (
        "the API is one uvicorn process on loopback with Postgres, Redis and SeaweedFS S3 (a second one, "
        "alternated with it, with GTC_LOOKUP_CACHE_SECONDS=0)"
        if "concurrency" in log
        else "engine only (no service)"
    )
    tables = [
        markdown_table(
            [
                "size",
                "service p50 / p95 ms",
                "in-process p50 / p95 ms, alternated with the service",
                "in-process p50 / p95 ms alone, before the services start",
                "forward p50 / p95 ms",
                "service ÷ in-process (alternated)",
                "service p50 / p95 ms, key and model read on every request (GTC_LOOKUP_CACHE_SECONDS=0), "
                "alternated",
                "that ÷ in-process",
            ],
            latency_rows,
        ),
        *_service_tables(log),
        markdown_table(
            [
                "size",
                "in-process p50 / p95 ms",
                "with flips=true (4 forward passes), alternated",
                "flips ÷ plain (p50)",
            ],
            [
                [
                    f"{size} px",
                    _ms(r["flips"]["plain"]),
                    _ms(r["flips"]["flips"]),
                    _ratio(r["flips"]["flips"], r["flips"]["plain"]),
                ]
                for size, r in log["latency"].items()
                if "flips" in r
            ],
        ),
        markdown_table(
            [
                f"training: {t['images']} images, {t['size']} px, {t['epochs']} epochs",
                "plain (noisy)",
                "G-T",
                "ratio",
            ],
            [["wall s", f"{t['plain_s']:.1f}", f"{t['gt_s']:.1f}", f"{t['ratio']:.2f}x"]],
        ),
    ]
    head = [
        f"### Where users wait (section {log['section']})",
        "",
        "Command:",
        "```",
        log["command"],
        "```",
        f"Machine: {m['cpu_count']} CPUs, torch {m['torch']} ({m['torch_threads']} thread(s)), device "
        f"{m['device']}, {m['platform']}. One {s['image'][1]} x {s['image'][0]} JPEG; untrained UNet "
        f"{s['channels']}; {stack}.",
    ]
    return "\n\n".join(["\n".join(head), *tables])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="32 px, tiny network, few requests (seconds)")
    p.add_argument("--engine-only", action="store_true", help="no services: in-process, forward, training")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", help="model sizes (default 128 256)")
    p.add_argument("--requests", type=int, help="timed calls per latency figure (default 40)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--batch", type=int, help="images in one segment-batch call (default 16)")
    p.add_argument("--ingest", type=int, help="masks in the ingest batch (default 400)")
    p.add_argument("--out", type=Path, help="JSON file (default bench/out/speed-<time>.json)")
    p.add_argument("--benchmarks", type=Path, default=BENCHMARKS, help="markdown file to update")
    p.add_argument("--section", default="speed", help="markdown section name (default speed)")
    p.add_argument("--no-markdown", action="store_true", help="do not touch the markdown file")
    args = p.parse_args(argv)
    if args.clients < 2:
        p.error("--clients must be at least 2 (it is compared with one client)")
    smoke = args.smoke
    sizes = args.sizes or ([32] if smoke else [128, 256])
    n = args.requests or (5 if smoke else 40)
    net = TINY_NET if smoke else NetConfig()
    height, width = (96, 112) if smoke else IMAGE_HW
    image = photo(height, width)
    log: dict[str, Any] = {
        "command": " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])]),
        "section": args.section,
        "machine": machine(),
        "settings": {"image": [height, width], "channels": list(net.channels), "requests": n},
        "latency": {str(s): engine_latency(untrained_bundle(s, net), image, n, args.device) for s in sizes},
    }
    if not args.engine_only:
        measure_service(log, args, sizes, net, image)
    print(f"latency {json.dumps(log['latency'])}", flush=True)
    log["training"] = training(
        32 if smoke else 128, 16 if smoke else 96, 4 if smoke else 16, net, args.device
    )
    text = render(log)
    print(text)
    out = args.out or OUT_DIR / f"speed-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(log, indent=1))
    if not args.no_markdown:
        write_section(args.section, text, args.benchmarks)
    return 0


def measure_service(
    log: dict[str, Any], args: argparse.Namespace, sizes: list[int], net: NetConfig, image: bytes
) -> None:
    """The service's figures into ``log``: latency per size, concurrency, batch, ingest (S3 and embedded)."""
    smoke = args.smoke
    n = log["settings"]["requests"]
    n_ingest = args.ingest or (20 if smoke else 400)
    mask_size = 32 if smoke else 256
    with tempfile.TemporaryDirectory(prefix="gtc-speed-") as tmp:
        workdir = Path(tmp)
        # A second API on the same stack reads the key and the model from the database on every request.
        with (
            services(workdir) as settings,
            api_server(settings, workdir / "api.log") as base_url,
            api_server(
                settings.model_copy(update={"lookup_cache_seconds": 0}), workdir / "api-db.log"
            ) as db_url,
        ):
            bundles = {s: untrained_bundle(s, net) for s in sizes}
            worlds = {s: seed(settings, base_url, n_images=2, model=bundles[s]) for s in sizes}
            for s in sizes:
                apis = {"service": worlds[s], "service_db_lookups": replace(worlds[s], base_url=db_url)}
                paired = service_latency(apis, bundles[s], image, n)
                row = log["latency"][str(s)]
                row["in_process_paired"] = paired.pop("in_process")
                row.update(paired)  # service, service_db_lookups
            first = worlds[sizes[0]]
            per_client = max(2, n // 4)
            log["concurrency"] = {"size": sizes[0], **concurrency(first, image, args.clients, per_client)}
            # The same clients against a second API on the same stack that runs every image alone.
            alone = settings.model_copy(update={"infer_max_batch": 1})
            with api_server(alone, workdir / "api-alone.log") as alone_url:
                unbatched = concurrency(replace(first, base_url=alone_url), image, args.clients, per_client)
            log["concurrency"]["many_alone"] = unbatched["many"]
            k = args.batch or (4 if smoke else 16)
            log["batch"] = {"size": sizes[0], **batch(first, image, k, repeats=1 if smoke else 3)}
            log["ingest"] = {"s3": ingest(base_url, first.auth, n_ingest, mask_size)}
        log["ingest"]["embedded"] = embedded_ingest(workdir / "embedded", n_ingest, mask_size)


if __name__ == "__main__":
    raise SystemExit(main())
