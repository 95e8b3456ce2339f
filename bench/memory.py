"""Memory benchmark: how much the API process grows for the largest requests it accepts, and whether it
hands the memory back.

    python -m bench.memory

Starts the production stack like ``bench.load`` (PostgreSQL, Redis, a SeaweedFS S3 server and
``uvicorn app.main:create_app``, without the training allocator settings), seeds a project with a tiny
model, then sends, one at a time:

- ``six 7000x7000 PNGs``: six all-black RGB 7000x7000 PNGs (about 150 kB each) in one image upload;
- ``photo zip``: one zip of about 300 MB of real photographs (Kvasir-SEG images from
  ``../shared/data/kvasir-seg``, enlarged to 2400 px wide and saved as JPEG, quality 95);
- ``segment 7000x7000``: ``POST /v1/models/{id}/segment`` with a 7000x7000 JPEG photograph (PNG mask out).

For each it samples the API's resident set (``/proc/<pid>/status`` VmRSS, every 5 ms) and reports the
idle RSS before, the peak growth during the request and the RSS 5 s after the answer. Writes the table
into BENCHMARKS.md (section ``memory``) and the JSON to ``bench/out/memory.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from PIL import Image

from bench.kvasir import KVASIR
from bench.load_setup import World, api_process, seed, services
from bench.report import write_section

OUT_DIR = Path(__file__).resolve().parent / "out"
PEAK_TARGET_MB = 600.0
RETURN_TARGET_MB = 200.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextmanager
def peak_rss(pid: int, every_s: float = 0.005) -> Iterator[Callable[[], float]]:
    """Samples the process's RSS in a thread while the block runs; yields a function giving the peak."""
    peak = [rss_mb(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(every_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: peak[0]
    finally:
        done.set()
        thread.join()


@dataclass(frozen=True)
class Case:
    name: str
    input: str  # what was sent, in words
    upload_mb: float
    status: int
    seconds: float
    idle_mb: float
    peak_growth_mb: float
    after_mb: float

    @property
    def returned_to_mb(self) -> float:
        return self.after_mb - self.idle_mb


def black_png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


def photo_jpeg(path: Path, width: int, height: int | None = None, quality: int = 95) -> bytes:
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        size = (width, height or round(width * rgb.height / rgb.width))
        big = rgb.resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def photo_zip(target_bytes: int) -> bytes:
    """Real photographs (Kvasir-SEG, enlarged) until the archive holds ``target_bytes``; stored, since
    JPEG does not compress further."""
    images = sorted((KVASIR / "images").glob("*.jpg"))
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in images:
            data = photo_jpeg(path, 2400)
            archive.writestr(f"photos/{path.name}", data)
            total += len(data)
            if total >= target_bytes:
                break
    return buffer.getvalue()


def measure(
    name: str, what: str, pid: int, send: Callable[[], httpx.Response], upload_bytes: int, settle_s: float
) -> Case:
    time.sleep(settle_s)
    idle = rss_mb(pid)
    start = time.perf_counter()
    with peak_rss(pid) as peak:
        response = send()
    seconds = time.perf_counter() - start
    top = peak()
    time.sleep(settle_s)
    after = rss_mb(pid)
    case = Case(name, what, upload_bytes / 2**20, response.status_code, seconds, idle, top - idle, after)
    print(
        f"{name}: {response.status_code} in {seconds:.1f} s, idle {idle:.0f} MB, "
        f"peak +{case.peak_growth_mb:.0f} MB, after {case.after_mb:.0f} MB",
        flush=True,
    )
    if response.status_code >= 400:
        print(f"  answer: {response.text[:500]}", flush=True)
    return case


def run(world: World, pid: int, zip_mb: int, settle_s: float) -> list[Case]:
    cases = []
    with httpx.Client(base_url=world.base_url, headers=world.auth, timeout=1800.0) as client:
        images_url = f"/v1/datasets/{world.dataset_id}/images"
        # Warm-up: the first upload and segmentation import and allocate what every later one reuses.
        warm = [("files", ("warm.png", black_png(64), "image/png"))]
        client.post(images_url, files=warm).raise_for_status()
        client.post(f"/v1/models/{world.model_id}/segment", files={"file": ("w.png", black_png(64))})

        pngs = [(f"black{i}.png", black_png(7000)) for i in range(6)]
        files = [("files", (n, d, "image/png")) for n, d in pngs]
        cases.append(
            measure(
                "six 7000x7000 PNGs",
                "one upload of six all-black RGB 7000x7000 PNGs",
                pid,
                lambda: client.post(images_url, files=files),
                sum(len(d) for _, d in pngs),
                settle_s,
            )
        )
        archive = photo_zip(zip_mb * 2**20)
        n_photos = len(zipfile.ZipFile(io.BytesIO(archive)).namelist())
        zipped = [("files", ("photos.zip", archive, "application/zip"))]
        cases.append(
            measure(
                "photo zip",
                f"one zip of {n_photos} JPEG photographs 2400 px wide",
                pid,
                lambda: client.post(images_url, files=zipped),
                len(archive),
                settle_s,
            )
        )
        query = photo_jpeg(sorted((KVASIR / "images").glob("*.jpg"))[0], 7000, 7000)
        cases.append(
            measure(
                "segment 7000x7000",
                "a 7000x7000 JPEG photograph, PNG mask out",
                pid,
                lambda: client.post(
                    f"/v1/models/{world.model_id}/segment",
                    params={"format": "png"},
                    files={"file": ("big.jpg", query, "image/jpeg")},
                ),
                len(query),
                settle_s,
            )
        )
    return cases


def markdown(cases: list[Case], command: str) -> str:
    lines = [
        "Command:",
        "```",
        command,
        "```",
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}. The API is "
        "`uvicorn app.main:create_app` (one process) on the production stack (PostgreSQL, Redis, "
        "SeaweedFS S3), started without MALLOC_* variables. RSS sampled every 5 ms; 'after' is read "
        "5 s after the answer. Targets: peak growth "
        f"< {PEAK_TARGET_MB:.0f} MB, back within {RETURN_TARGET_MB:.0f} MB of idle.",
        "",
        "| request | input | upload MB | status | s | idle RSS MB | peak growth MB | after - idle MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        lines.append(
            f"| {c.name} | {c.input} | {c.upload_mb:.1f} | {c.status} | {c.seconds:.1f} | {c.idle_mb:.0f} | "
            f"{c.peak_growth_mb:.0f} | {c.returned_to_mb:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    p.add_argument("--zip-mb", type=int, default=300, help="size of the photo zip")
    p.add_argument("--settle", type=float, default=5.0, help="seconds before idle and after readings")
    p.add_argument("--no-markdown", action="store_true", help="do not write BENCHMARKS.md")
    args = p.parse_args(argv)
    command = "python -m bench.memory " + shlex.join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="gtc-memory-") as tmp:
        work = Path(tmp)
        with services(work) as settings, api_process(settings, work / "api.log") as (base_url, proc):
            world = seed(settings, base_url)
            cases = run(world, proc.pid, args.zip_mb, args.settle)
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "memory.json").write_text(json.dumps([asdict(c) for c in cases], indent=1))
    if not args.no_markdown:
        title = "### API memory for the largest requests (section memory)\n\n"
        write_section("memory", title + markdown(cases, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
