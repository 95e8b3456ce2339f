"""The load benchmark's world: real services on loopback, the API as a subprocess, and seeded data.

Postgres and Redis are the ones already running on the machine (a throwaway database and a claimed
Redis db number, as the tests use); the object store is a SeaweedFS S3 server started like the tests
start it. The API is ``uvicorn app.main:create_app --factory`` with ``GTC_*`` variables. Seeding uses the
HTTP API for everything a user does and the worker's own recording function
(``app.services.results.record_results``) for the one thing a worker does: finishing a job with a model.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import JobStatus, TrainingJob
from app.db.session import make_engine, make_session_factory, session_scope, upgrade
from app.services.projects import create_project
from app.services.results import JobResults, SampleVerdict, model_id_for_job, record_results
from app.settings import Settings
from app.storage import keys, make_store
from gtcorrect.config import NetConfig, TrainConfig
from gtcorrect.model import ModelBundle
from gtcorrect.networks import build_network
from gtcorrect.types import LabelMap
from tests.support.env import settings_env
from tests.support.processes import stop_process
from tests.support.s3server import free_ports, run_s3_server
from tests.support.services import claimed_redis_db, fresh_postgres_database, stack_settings

IMAGE_SIZE = 32  # pixels, square: uploads and inference stay small so the server, not the payload, is timed


@dataclass(frozen=True)
class World:
    base_url: str
    auth: dict[str, str]
    dataset_id: str
    job_id: str
    model_id: str


def png(seed: int, size: int = IMAGE_SIZE, grey_mask: bool = False) -> bytes:
    """A seeded RGB image, or a 0/1 mask with a square in the middle: (S, S[, 3]) uint8 -> PNG bytes."""
    if grey_mask:
        array = np.zeros((size, size), dtype=np.uint8)
        array[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    else:
        array = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


TINY_NET = NetConfig(channels=(4, 8), strides=(2,), num_res_units=0)  # a few hundred weights


def untrained_bundle(size: int, net: NetConfig, metrics: dict[str, float] | None = None) -> ModelBundle:
    """A real, untrained (seeded) 2-class UNet of architecture ``net`` for ``size`` px RGB images: its
    speed is a trained one's."""
    torch.manual_seed(0)
    config = TrainConfig(image_size=size, net=net)
    network = build_network(config.net, 3, 2)
    return ModelBundle(
        config, LabelMap(("background", "polyp")), 3, network.state_dict(), metrics=metrics or {}
    )


def tiny_bundle() -> ModelBundle:
    """``TINY_NET`` at 32 px: inference costs the server little."""
    return untrained_bundle(IMAGE_SIZE, TINY_NET, {"dice": 0.5})


@contextlib.contextmanager
def services(workdir: Path) -> Iterator[Settings]:
    """Settings for a fresh Postgres database, a claimed Redis db and a new bucket on a new S3 server."""
    with fresh_postgres_database() as pg_url, claimed_redis_db() as redis_url:
        upgrade(pg_url)
        with run_s3_server(workdir / "seaweedfs") as s3:
            settings = stack_settings(workdir / "gtcorrect", pg_url, redis_url, s3, "gtc-load")
            yield settings


@contextlib.contextmanager
def api_process(
    settings: Settings, log_path: Path, workers: int = 1
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``uvicorn app.main:create_app --factory`` on a free loopback port; yields its base URL and process.
    The environment is this one's without GTC_* and MALLOC_* (the training allocator settings)."""
    port = free_ports(1)[0]
    command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    env = {k: v for k, v in settings_env(settings).items() if not k.startswith("MALLOC_")}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_live(proc, base_url, log_path)
        yield base_url, proc
    finally:
        stop_process(proc, 20)


@contextlib.contextmanager
def api_server(settings: Settings, log_path: Path, workers: int = 1) -> Iterator[str]:
    """``api_process``, yielding only the base URL."""
    with api_process(settings, log_path, workers) as (base_url, _):
        yield base_url


def _wait_live(proc: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}; see {log_path}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/readyz", timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the API at {base_url} was not ready after {timeout_s}s; see {log_path}")


def _ok(response: httpx.Response, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise RuntimeError(f"seeding: {response.request.method} {response.request.url} -> {response.text}")
    body: dict[str, Any] = response.json()
    return body


def seed(settings: Settings, base_url: str, n_images: int = 8, model: ModelBundle | None = None) -> World:
    """A project and key, a dataset with ``n_images`` annotated images, and a succeeded job with a model
    (``model``, default ``tiny_bundle()``)."""
    engine = make_engine(settings.resolved_database_url())
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        _, key = create_project(session, f"load-{secrets.token_hex(3)}")
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, headers=auth, timeout=60.0) as client:
        body = {"name": "load", "label_map": {"0": "background", "1": "polyp"}}
        dataset = _ok(client.post("/v1/datasets", json=body), 201)["id"]
        names = [f"seed{i:02d}.png" for i in range(n_images)]
        images = [("files", (n, png(i), "image/png")) for i, n in enumerate(names)]
        uploaded = _ok(client.post(f"/v1/datasets/{dataset}/images", files=images), 201)
        masks = [("files", (n, png(0, grey_mask=True), "image/png")) for n in names]
        batch = _ok(
            client.post(
                f"/v1/datasets/{dataset}/annotation-batches", data={"annotator": "load"}, files=masks
            ),
            201,
        )
        job = _ok(client.post("/v1/jobs", json={"dataset_id": dataset}), 202)["id"]
    model_id = _finish_job(settings, factory, uuid.UUID(job), uploaded, batch, model or tiny_bundle())
    engine.dispose()
    return World(base_url, auth, dataset, job, model_id)


def _finish_job(
    settings: Settings,
    factory: sessionmaker[Session],
    job_id: uuid.UUID,
    uploaded: dict[str, Any],
    batch: dict[str, Any],
    model: ModelBundle,
) -> str:
    """Play the worker: claim the job, store the model weights, record verdicts and the model."""
    with session_scope(factory) as session:
        job = session.get_one(TrainingJob, job_id)
        job.status, job.attempt = JobStatus.running, 1
        project = job.project_id
    weights_key = keys.model(project, model_id_for_job(job_id))
    make_store(settings).put(weights_key, model.to_bytes())
    annotation = {f["sample_id"]: f["annotation_id"] for f in batch["report"]["files"]}
    rng = np.random.default_rng(0)
    verdicts = []
    for f in uploaded["files"]:
        p = float(rng.uniform())
        verdicts.append(
            SampleVerdict(uuid.UUID(f["id"]), uuid.UUID(annotation[f["id"]]), p, p < 0.5, 1 - p, 1)
        )
    with session_scope(factory) as session:
        results = JobResults(verdicts, [], weights_key, {"dice": 0.5}, {"phase": "done"})
        return str(record_results(session, job_id, 1, results).id)
