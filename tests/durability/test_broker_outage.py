"""A job created while the broker is down: committed ``queued`` (202), then sent by the API's sweeper once
a real Redis comes up on the broker's port."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import TrainingJob
from app.db.session import session_scope
from app.main import create_app
from app.services.projects import create_project
from app.settings import Settings
from tests.api.conftest import files_part, image_png, mask_png
from tests.durability.stack import wait_until
from tests.support.processes import stop_process, tail
from tests.support.s3server import free_ports

pytestmark = pytest.mark.integration

REDIS_SERVER = shutil.which("redis-server")


@contextlib.contextmanager
def _start_redis(port: int, workdir: Path) -> Iterator[redis.Redis]:
    log = workdir / "redis.log"
    cmd = [str(REDIS_SERVER), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    client = redis.Redis(host="127.0.0.1", port=port)

    def up() -> bool:
        assert proc.poll() is None, f"redis-server exited:\n{tail(log)}"
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until("redis-server start", up, 30.0, lambda: tail(log))
        yield client
    finally:
        client.close()
        stop_process(proc, 30)


def _progress(factory: sessionmaker[Session], job_id: str) -> dict[str, Any] | None:
    with session_scope(factory) as session:
        row = session.get(TrainingJob, uuid.UUID(job_id))
        return dict(row.progress) if row is not None else None


def _messages(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange("train", 0, -1)]


@pytest.mark.skipif(REDIS_SERVER is None, reason="needs the redis-server binary to start a second broker")
def test_job_created_while_the_broker_is_down_is_sent_when_it_is_back(
    settings: Settings, tmp_path: Path, db_session_factory: sessionmaker[Session]
) -> None:
    (port,) = free_ports(1)  # nothing listens here until the broker "comes back" below
    down = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}/0", "sweep_interval_s": 0.5})
    with session_scope(db_session_factory) as session:
        _, key = create_project(session, "outage")
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(down)) as client:
        dataset = client.post("/v1/datasets", json={"name": "d"}, headers=auth).json()["id"]
        images = {"a.png": image_png(32, 32, 1), "b.png": image_png(32, 32, 2)}
        assert client.post(
            f"/v1/datasets/{dataset}/images", files=files_part(images), headers=auth
        ).is_success
        masks = files_part({"a.png": mask_png(32, 32), "b.png": mask_png(32, 32)})
        batch = client.post(
            f"/v1/datasets/{dataset}/annotation-batches", data={"annotator": "x"}, files=masks, headers=auth
        )
        assert batch.status_code == 201, batch.text

        created = client.post("/v1/jobs", json={"dataset_id": dataset}, headers=auth)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        assert created.json()["status"] == "queued"
        assert client.get("/readyz").status_code == 503, "readiness must report the broker as down"

        with _start_redis(port, tmp_path) as back:
            arrived = wait_until(
                "the job's message in the train queue",
                lambda: [m for m in _messages(back) if job_id in m["headers"]["argsrepr"]],
                60.0,
                lambda: f"queue holds {_messages(back)}",
            )
            assert len(arrived) == 1 and arrived[0]["headers"]["task"] == "gtcorrect.train"
            wait_until(
                "the outbox marker cleared",
                lambda: _progress(db_session_factory, job_id) == {"phase": "queued"},
                30.0,
                lambda: str(_progress(db_session_factory, job_id)),
            )
            assert len(_messages(back)) == 1, "sent once, not once per sweep"
            job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert job["status"] == "queued" and job["error"] is None, job
