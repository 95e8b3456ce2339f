"""The user's whole journey over HTTP, shared by the production-stack and embedded-mode tests.

Create a dataset, upload images (zip) and a batch of masks in which some are strongly corrupted, train,
read the noise report, download a corrected mask and a GMM plot, segment a new image.
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from tests.worker.seed import tiny_config
from tests.worker.synthetic import make_set, png_bytes, zip_bytes

N_IMAGES, N_CORRUPTED = 12, 4
HEIGHT, WIDTH = 40, 48  # non-square on purpose: outputs must come back at this size, not 32 x 32
JOB_TIMEOUT_S = 240.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class FlowOutcome:
    job: dict[str, Any]
    report: list[dict[str, Any]]  # noise report rows, least clean first
    corrupted_names: frozenset[str]


def e2e_config(seed: int) -> dict[str, Any]:
    """Small enough for 2 CPU cores; long enough that shifted masks stand out (checked over 3 seeds)."""
    config = tiny_config(seed, rounds=2, t_epochs=2).to_dict()
    config["g"]["warmup_epochs"] = 4
    config["g"]["epochs_per_round"] = 2
    return config


def _ok(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.text}"
    )
    return dict(response.json())


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC), f"not a PNG: {data[:16]!r}"
    with Image.open(io.BytesIO(data)) as img:
        return img.size  # (width, height)


def wait_for_job(client: httpx.Client, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> dict[str, Any]:
    """Poll until the job is terminal; fail with its last state on timeout."""
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = _ok(client.get(f"/v1/jobs/{job_id}"), 200)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(1.0)
    raise AssertionError(f"job {job_id} did not finish within {timeout_s}s; last state: {job}")


def upload_dataset(client: httpx.Client, seed: int) -> tuple[str, str, frozenset[str]]:
    data = make_set(N_IMAGES, N_CORRUPTED, height=HEIGHT, width=WIDTH, seed=seed)
    dataset = _ok(
        client.post(
            "/v1/datasets", json={"name": f"discs-{seed}", "label_map": {"0": "background", "1": "disc"}}
        ),
        201,
    )
    images_zip = zip_bytes({n: png_bytes(img) for n, img in zip(data.names, data.images, strict=True)})
    uploaded = _ok(
        client.post(
            f"/v1/datasets/{dataset['id']}/images",
            files={"files": ("images.zip", images_zip, "application/zip")},
        ),
        201,
    )
    assert uploaded["created"] == N_IMAGES, uploaded
    masks_zip = zip_bytes({n: png_bytes(m) for n, m in zip(data.names, data.given, strict=True)})
    batch = _ok(
        client.post(
            f"/v1/datasets/{dataset['id']}/annotation-batches",
            data={"annotator": "vendor-b", "source": "e2e: 4 of 12 masks shifted and dilated"},
            files={"files": ("masks.zip", masks_zip, "application/zip")},
        ),
        201,
    )
    assert batch["status"] == "accepted", batch
    return dataset["id"], batch["id"], frozenset(data.names[i] for i in data.corrupted)


def _check_outputs(client: httpx.Client, job_id: str, dataset_id: str, report: list[dict[str, Any]]) -> None:
    corrected = [row for row in report if row["changed_fraction"] is not None]
    assert corrected, f"no corrected masks although {sum(r['flagged'] for r in report)} samples were flagged"
    mask = client.get(f"/v1/jobs/{job_id}/corrected-masks/{corrected[0]['sample_id']}")
    assert mask.status_code == 200, mask.text
    assert _png_size(mask.content) == (WIDTH, HEIGHT)

    rounds = _ok(client.get(f"/v1/jobs/{job_id}/gmm-rounds"), 200)["items"]
    assert rounds and rounds[0]["round"] == 0 and all(r["threshold"] == 0.5 for r in rounds), rounds
    plots = client.get(f"/v1/jobs/{job_id}/plots/gmm-rounds").json()["items"]
    assert plots and plots[0]["round"] == 0, plots
    plot = client.get(plots[0]["url"])
    assert plot.status_code == 200 and plot.content.startswith(PNG_MAGIC)

    fresh = make_set(1, 0, height=52, width=60, seed=999)
    segmented = client.post(
        "/v1/models/latest/segment",
        params={"dataset_id": dataset_id, "format": "png"},
        files={"file": ("new.png", png_bytes(fresh.images[0]), "image/png")},
    )
    assert segmented.status_code == 200, segmented.text
    assert _png_size(segmented.content) == (60, 52)
    values = np.unique(np.asarray(Image.open(io.BytesIO(segmented.content))))
    assert set(values.tolist()) <= {0, 255}, values


def run_flow(client: httpx.Client, seed: int = 0) -> FlowOutcome:
    """The acceptance flow; ``client`` has the base URL and the API key set."""
    dataset_id, batch_id, corrupted = upload_dataset(client, seed)
    created = client.post(
        "/v1/jobs", json={"dataset_id": dataset_id, "batch_ids": [batch_id], "config": e2e_config(seed)}
    )
    job = _ok(created, 202)
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"
    job = wait_for_job(client, job["id"])
    assert job["status"] == "succeeded", f"job ended {job['status']}: {job.get('error')}"
    # The e2e config switches the gate off (tests.gtcorrect.synthetic.PLUMBING); the quality is reported.
    assert job["quality"]["corrections"]["status"] == "applied", job["quality"]

    report = _ok(
        client.get(f"/v1/jobs/{job['id']}/noise-report", params={"limit": 100, "sort": "clean_probability"}),
        200,
    )
    rows = report["items"]
    assert len(rows) == N_IMAGES
    least_clean = [row["file_name"] for row in rows[:N_CORRUPTED]]
    hits = len(set(least_clean) & corrupted)
    assert hits >= N_CORRUPTED - 1, f"least clean {least_clean}, corrupted {sorted(corrupted)}"
    _check_outputs(client, job["id"], dataset_id, rows)
    return FlowOutcome(job, rows, corrupted)


def _kvasir() -> Path:
    root = Path(os.environ.get("GTC_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    return root / "kvasir-seg"


def run_tiny_clean_job(client: httpx.Client, n: int = 24) -> dict[str, Any]:
    """24 clean Kvasir-SEG masks, 3 epochs at 64 px, the default self-assessment: the job must succeed,
    warn that it cannot vouch for its verdicts and withhold corrections (no correction is downloadable)."""
    root = _kvasir()
    names = sorted(p.name for p in (root / "images").glob("*.jpg"))[:n]
    assert len(names) == n, f"{root}: expected Kvasir-SEG with at least {n} images"
    label_map = {"0": "background", "1": "polyp"}
    dataset = _ok(client.post("/v1/datasets", json={"name": "kvasir-tiny", "label_map": label_map}), 201)
    images = zip_bytes({name: (root / "images" / name).read_bytes() for name in names})
    masks = zip_bytes({name: (root / "masks" / name).read_bytes() for name in names})
    _ok(
        client.post(
            f"/v1/datasets/{dataset['id']}/images", files={"files": ("i.zip", images, "application/zip")}
        ),
        201,
    )
    batch = _ok(
        client.post(
            f"/v1/datasets/{dataset['id']}/annotation-batches",
            data={"annotator": "expert", "mask_mode": "binary"},
            files={"files": ("m.zip", masks, "application/zip")},
        ),
        201,
    )
    config = {
        "image_size": 64,
        "g": {"warmup_epochs": 1, "rounds_max": 1, "epochs_per_round": 1},
        "t": {"epochs": 1},
    }
    job = _ok(
        client.post(
            "/v1/jobs", json={"dataset_id": dataset["id"], "batch_ids": [batch["id"]], "config": config}
        ),
        202,
    )
    job = wait_for_job(client, job["id"])
    assert job["status"] == "succeeded", f"job ended {job['status']}: {job.get('error')}"
    quality = job["quality"]
    codes = {w["code"] for w in quality["warnings"]}
    assert "too_few_samples" in codes and "corrections_withheld" in codes, quality
    assert quality["corrections"]["status"] == "withheld" and quality["corrections"]["proposed"] == 0, quality
    report = _ok(client.get(f"/v1/jobs/{job['id']}/noise-report", params={"limit": 100}), 200)["items"]
    assert len(report) == n and not any(row["correction_proposed"] for row in report)
    archive = client.get(f"/v1/jobs/{job['id']}/corrected-masks.zip")
    # No corrected mask: the archive says why instead of being empty.
    with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
        assert archive.status_code == 200 and z.namelist() == ["README.txt"]
        assert quality["corrections"]["reason"] in z.read("README.txt").decode()
    return job
