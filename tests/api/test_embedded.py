"""The same API on the embedded adapters (SQLite, local objects, filesystem broker): no external services."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.db.session import make_engine, make_session_factory, session_scope
from app.main import create_app
from app.services.projects import create_project
from app.settings import Settings


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_annotate_and_queue_a_job_embedded(embedded_settings: Settings) -> None:
    engine = make_engine(embedded_settings.resolved_database_url())
    with session_scope(make_session_factory(engine)) as session:
        _, key = create_project(session, "local")
    engine.dispose()
    auth = {"Authorization": f"Bearer {key}"}
    image = _png(np.full((16, 24, 3), 90, dtype=np.uint8))
    mask = _png((np.arange(16 * 24).reshape(16, 24) % 2).astype(np.uint8))
    with TestClient(create_app(embedded_settings)) as client:
        assert client.get("/readyz").status_code == 200
        dataset = client.post("/v1/datasets", json={"name": "d"}, headers=auth).json()["id"]
        files = [("files", ("s.png", image, "image/png"))]
        assert client.post(f"/v1/datasets/{dataset}/images", files=files, headers=auth).status_code == 201
        masks = [("files", ("s.png", mask, "image/png"))]
        batch = client.post(
            f"/v1/datasets/{dataset}/annotation-batches", data={"annotator": "me"}, files=masks, headers=auth
        )
        assert batch.status_code == 201, batch.text
        job = client.post(
            "/v1/jobs", json={"dataset_id": dataset, "config": {"image_size": 32}}, headers=auth
        )
        assert job.status_code == 202, job.text
        # SQLite hands back naive times: the API still answers RFC 3339 with the zone, as on POST.
        polled = client.get(f"/v1/jobs/{job.json()['id']}", headers=auth).json()
        assert polled["created_at"] == job.json()["created_at"] and polled["created_at"].endswith("Z")
        listed = client.get(f"/v1/datasets/{dataset}/annotation-batches", headers=auth).json()["items"]
        assert listed[0]["created_at"] == batch.json()["created_at"]
    queued = list((embedded_settings.broker_dir / "queue").iterdir())
    assert len(queued) == 1 and job.json()["id"] in queued[0].read_text()
