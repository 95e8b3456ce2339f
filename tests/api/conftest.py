"""Fixtures for API tests: the app on real Postgres, Redis and S3 (C's ``settings``), a project with a key,
and helpers that build images, masks and zips in memory."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Base, JobStatus, TrainingJob
from app.db.session import session_scope
from app.main import create_app
from app.services.projects import create_project
from app.services.results import CorrectedRecord, JobResults, SampleVerdict, model_id_for_job, record_results
from app.settings import Settings
from app.storage import ObjectStore, keys, make_store
from gtcorrect.config import NetConfig, TrainConfig
from gtcorrect.data import mask_to_png
from gtcorrect.model import ModelBundle
from gtcorrect.networks import build_network
from gtcorrect.types import LabelMap


def png_bytes(array: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) uint8 -> PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def image_png(height: int, width: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return png_bytes(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def mask_png(height: int, width: int, value: int = 1) -> bytes:
    """A 0/``value`` index mask with a filled square in the middle."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = value
    return png_bytes(mask)


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def files_part(entries: dict[str, bytes], field: str = "files") -> list[Any]:
    """Multipart file parts, all under the form field ``field``."""
    return [(field, (name, data, "application/octet-stream")) for name, data in entries.items()]


def upload_images(
    client: TestClient, dataset_id: str, auth: dict[str, str], entries: dict[str, bytes]
) -> Any:
    """POST the files ``entries`` (name -> bytes) as one image upload."""
    return client.post(f"/v1/datasets/{dataset_id}/images", files=files_part(entries), headers=auth)


def upload_masks(
    client: TestClient, dataset_id: str, auth: dict[str, str], entries: dict[str, bytes], annotator: str
) -> Any:
    """POST the files ``entries`` as one annotation batch drawn by ``annotator``."""
    return client.post(
        f"/v1/datasets/{dataset_id}/annotation-batches",
        data={"annotator": annotator},
        files=files_part(entries),
        headers=auth,
    )


def tiny_bundle() -> ModelBundle:
    """A real, untrained 2-class UNet small enough to run in milliseconds on a CPU."""
    torch.manual_seed(0)
    config = TrainConfig(image_size=32, net=NetConfig(channels=(4, 8), strides=(2,), num_res_units=0))
    net = build_network(config.net, 3, 2)
    return ModelBundle(config, LabelMap(("background", "polyp")), 3, net.state_dict(), metrics={"dice": 0.5})


@pytest.fixture
def store(settings: Settings) -> ObjectStore:  # overrides the parametrised port fixture for these tests
    return make_store(settings)


@pytest.fixture
def client(settings: Settings, db_session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    # db_session_factory: every table is truncated after the test.
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _new_key(factory: sessionmaker[Session], name: str) -> str:
    with session_scope(factory) as session:
        _, key = create_project(session, name)
    return key


@pytest.fixture
def auth(db_session_factory: sessionmaker[Session]) -> dict[str, str]:
    return {"Authorization": f"Bearer {_new_key(db_session_factory, 'clinic-a')}"}


@pytest.fixture
def other_auth(db_session_factory: sessionmaker[Session]) -> dict[str, str]:
    return {"Authorization": f"Bearer {_new_key(db_session_factory, 'clinic-b')}"}


@pytest.fixture
def dataset_id(client: TestClient, auth: dict[str, str]) -> str:
    body = {"name": "polyps", "label_map": {"0": "background", "1": "polyp"}}
    response = client.post("/v1/datasets", json=body, headers=auth)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def count_rows(factory: sessionmaker[Session], model: type[Base]) -> int:
    with session_scope(factory) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def assert_problem(response: Any, status: int, *names: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status`` whose ``invalid_files`` name each of ``names``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    named = {entry["file"] for entry in body.get("invalid_files", [])}
    for name in names:
        assert name in named, f"{name} not named in {body}"
    return body


@dataclass
class Finished:
    job_id: str
    model_id: str
    samples: dict[str, str]  # file name -> sample id


def queued_job(client: TestClient, auth: dict[str, str], dataset_id: str) -> tuple[str, dict[str, str]]:
    images = {"a.png": image_png(30, 50, 1), "b.jpg.png": image_png(30, 50, 2), "c.png": image_png(30, 50, 3)}
    upload = client.post(f"/v1/datasets/{dataset_id}/images", files=files_part(images), headers=auth).json()
    masks = {name: mask_png(30, 50) for name in images}
    batch = client.post(
        f"/v1/datasets/{dataset_id}/annotation-batches",
        data={"annotator": "x"},
        files=files_part(masks),
        headers=auth,
    )
    assert batch.status_code == 201, batch.text
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id}, headers=auth)
    assert job.status_code == 202, job.text
    return str(job.json()["id"]), {f["file"]: f["id"] for f in upload["files"]}


@pytest.fixture
def finished(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
) -> Finished:
    job_id, samples = queued_job(client, auth, dataset_id)
    batch = client.get(f"/v1/datasets/{dataset_id}/annotation-batches", headers=auth).json()["items"][0]
    annotation = {f["sample_id"]: f["annotation_id"] for f in batch["report"]["files"]}
    job_uuid = uuid.UUID(job_id)
    with session_scope(db_session_factory) as session:
        job = session.get(TrainingJob, job_uuid)
        assert job is not None
        job.status, job.attempt = JobStatus.running, 1
        project = job.project_id
    # What the worker writes (worker.push): corrected masks for flagged samples, encoded to be looked at
    # (0/255), one plot per G round, the model.
    corrected_mask = np.zeros((30, 50), dtype=np.uint8)
    corrected_mask[5:10, 5:10] = 1
    flagged = [samples["a.png"], samples["b.jpg.png"]]
    records = []
    for sid in flagged:
        key = keys.corrected(project, job_uuid, uuid.UUID(sid))
        store.put(key, mask_to_png(corrected_mask, LabelMap(("background", "polyp"))), "image/png")
        records.append(CorrectedRecord(uuid.UUID(sid), key, 0.25, 375))
    for k in (0, 1):
        store.put(keys.plot(project, job_uuid, f"gmm_round_{k}"), png_bytes(np.full((4, 4), k, np.uint8)))
    weights_key = keys.model(project, model_id_for_job(job_uuid))
    store.put(weights_key, tiny_bundle().to_bytes())
    probability = {samples["a.png"]: 0.1, samples["b.jpg.png"]: 0.3, samples["c.png"]: 0.9}
    verdicts = [
        SampleVerdict(uuid.UUID(sid), uuid.UUID(annotation[sid]), p, p < 0.5, 1.0 - p, 1)
        for sid, p in probability.items()
    ]
    with session_scope(db_session_factory) as session:
        model = record_results(
            session,
            job_uuid,
            1,
            JobResults(
                verdicts,
                records,
                weights_key,
                {"dice": 0.5},
                {"phase": "done", "estimated_noise_rate": 2 / 3},
                annotators=[
                    {
                        "annotator": "x",
                        "n_masks": 3,
                        "n_flagged": 2,
                        "dice_vs_model": 0.8,
                        "area_ratio": 1.3,
                        "offset_px": 2.5,
                        "offset_spread_px": 0.5,
                        "relative_offset_px": None,
                        "edge_alignment": 1.2,
                        "suspect": False,
                        "verdict": "too few masks (3) to judge",
                    }
                ],
            ),
        )
        model_id = str(model.id)
    return Finished(job_id, model_id, samples)
