"""Training jobs: create (committed, then really sent to Redis), validation, listing, cancel."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import JobStatus, TrainingJob
from app.db.session import session_scope
from app.main import create_app
from app.schemas.jobs import MAX_BATCH_IDS
from app.settings import Settings
from tests.api.conftest import assert_problem, count_rows, files_part, image_png, mask_png

pytestmark = pytest.mark.integration


@pytest.fixture
def batch_id(client: TestClient, auth: dict[str, str], dataset_id: str) -> str:
    images = {"a.png": image_png(32, 32, 1), "b.png": image_png(32, 32, 2), "c.png": image_png(32, 32, 3)}
    assert client.post(f"/v1/datasets/{dataset_id}/images", files=files_part(images), headers=auth).is_success
    masks = {"a.png": mask_png(32, 32), "b.png": mask_png(32, 32)}  # c.png stays unannotated
    response = client.post(
        f"/v1/datasets/{dataset_id}/annotation-batches",
        data={"annotator": "x"},
        files=files_part(masks),
        headers=auth,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture
def train_queue(settings: Settings) -> Callable[[], list[dict[str, Any]]]:
    """Reads the messages waiting in the Redis ``train`` queue; empty at the start of each test (the Redis
    database lives for the whole session)."""
    assert settings.broker_url is not None
    client = redis.Redis.from_url(settings.broker_url)
    client.delete("train")

    def messages() -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in client.lrange("train", 0, -1)]

    return messages


def test_create_job_commits_then_sends_the_task(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    batch_id: str,
    train_queue: Callable[[], list[dict[str, Any]]],
) -> None:
    body = {"dataset_id": dataset_id, "batch_ids": [batch_id], "config": {"image_size": 32, "epochs": 2}}
    response = client.post("/v1/jobs", json=body, headers=auth)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["config"]["image_size"] == 32
    assert (job["samples_used"], job["samples_left_out"]) == (2, 1)
    messages = train_queue()
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == "gtcorrect.train"
    assert job["id"] in messages[0]["headers"]["argsrepr"]
    fetched = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert fetched["batch_ids"] == [batch_id] and fetched["phase"] == "queued"


class WorkerViewQueue:
    """A ``TaskQueue`` that does what a worker does first: read the job row in its own session."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory
        self.seen: list[JobStatus | None] = []

    def send_train(self, job_id: uuid.UUID) -> None:
        with session_scope(self.factory) as session:
            row = session.get(TrainingJob, job_id)
            self.seen.append(row.status if row is not None else None)

    def ping(self) -> None:
        return None

    def depth(self) -> int:
        return len(self.seen)

    def close(self) -> None:
        return None


def test_job_row_is_committed_before_the_task_is_sent(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    batch_id: str,
    db_session_factory: sessionmaker[Session],
) -> None:
    queue = WorkerViewQueue(db_session_factory)
    client.app.state.queue = queue  # type: ignore[attr-defined]
    assert client.post("/v1/jobs", json={"dataset_id": dataset_id}, headers=auth).status_code == 202
    assert queue.seen == [JobStatus.queued]


def test_latest_selection_and_listing(
    client: TestClient, auth: dict[str, str], dataset_id: str, batch_id: str
) -> None:
    created = client.post("/v1/jobs", json={"dataset_id": dataset_id, "batch_ids": None}, headers=auth)
    assert created.status_code == 202, created.text
    assert created.json()["batch_ids"] is None
    assert client.get("/v1/jobs", params={"dataset_id": dataset_id}, headers=auth).json()["total"] == 1
    assert client.get("/v1/jobs", params={"status": "running"}, headers=auth).json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"confg": {"image_size": 64}}, "confg"),
        ({"presett": "quick"}, "presett"),
    ],
)
def test_a_mistyped_job_field_is_422_not_the_defaults(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    batch_id: str,
    body: dict[str, Any],
    needle: str,
) -> None:
    problem = assert_problem(
        client.post("/v1/jobs", json={"dataset_id": dataset_id, **body}, headers=auth), 422
    )
    assert needle in problem["detail"] and "Extra inputs are not permitted" in problem["detail"]


def test_samples_with_masks_in_two_batches_are_told(
    client: TestClient, auth: dict[str, str], dataset_id: str, batch_id: str
) -> None:
    """Two vendors' batches on the same images: the job trains on one mask per sample and says which."""
    alone = client.post("/v1/jobs", json={"dataset_id": dataset_id}, headers=auth)
    assert alone.status_code == 202 and alone.json()["notes"] == []
    masks = {"a.png": mask_png(32, 32), "c.png": mask_png(32, 32)}
    second = client.post(
        f"/v1/datasets/{dataset_id}/annotation-batches",
        data={"annotator": "vendor-b"},
        files=files_part(masks),
        headers=auth,
    ).json()["id"]
    for body in ({"dataset_id": dataset_id}, {"dataset_id": dataset_id, "batch_ids": [second, batch_id]}):
        client.post(f"/v1/jobs/{alone.json()['id']}/cancel", headers=auth)
        job = client.post("/v1/jobs", json=body, headers=auth)
        assert job.status_code == 202, job.text
        [note] = job.json()["notes"]
        last = "'vendor-b'" if "batch_ids" not in body else "'x'"
        assert note.startswith("1 samples have masks in more than one of the batches") and last in note
        assert "consensus" in note
        assert client.get(f"/v1/jobs/{job.json()['id']}", headers=auth).json()["notes"] == [note]
        client.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=auth)


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"image_size": 30}, "image_size"),
        ({"learning_rate": 0.1}, "learning_rate"),
        ({"g": {"tau": 2.0}}, "g.tau"),
        ({"method": "magic"}, "method"),
        # What an attack on the service submitted (202 before; the worker failed later or never ended):
        ({"t": {"epochs": 1_000_000_000}}, "t.epochs"),
        ({"lr": "abc"}, "lr"),
        ({"lr": -1}, "lr"),
        ({"g": {"warmup_epochs": 0}}, "g.warmup_epochs"),
        ({"image_size": 16}, "image_size"),
        ({"image_size": 8192}, "image_size"),
        ({"num_workers": 512}, "num_workers"),
        ({"net": {"channels": [16, 32, 64], "strides": [2]}}, "net.strides"),
        # Each value in bounds, their product terabytes: refused at submit, not by a worker killed each try.
        (
            {
                "image_size": 1024,
                "batch_size": 256,
                "net": {"channels": [512] * 5, "strides": [2] * 4, "num_res_units": 8},
            },
            "batch_size",
        ),
    ],
)
def test_invalid_config_is_422_naming_the_field(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    batch_id: str,
    train_queue: Callable[[], list[dict[str, Any]]],
    db_session_factory: sessionmaker[Session],
    config: dict[str, Any],
    needle: str,
) -> None:
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "config": config}, headers=auth)
    body = assert_problem(response, 422)
    assert body["field"] == f"config.{needle}" and body["detail"].startswith(f"config.{needle}: ")
    assert count_rows(db_session_factory, TrainingJob) == 0
    assert train_queue() == []


def test_operator_limits_and_the_active_job_quota(
    settings: Settings,
    db_session_factory: sessionmaker[Session],
    auth: dict[str, str],
    other_auth: dict[str, str],
    train_queue: Callable[[], list[dict[str, Any]]],
) -> None:
    tight = settings.model_copy(update={"max_active_jobs": 2, "max_epochs": 40})
    with TestClient(create_app(tight)) as client:
        ids = {}
        for name, key in (("a", auth), ("b", other_auth)):
            ids[name] = client.post("/v1/datasets", json={"name": name}, headers=key).json()["id"]
            files = files_part({"a.png": image_png(32, 32, 1)})
            assert client.post(f"/v1/datasets/{ids[name]}/images", files=files, headers=key).is_success
            masks = files_part({"a.png": mask_png(32, 32)})
            url = f"/v1/datasets/{ids[name]}/annotation-batches"
            assert client.post(url, data={"annotator": "x"}, files=masks, headers=key).is_success
        # The default G-T schedule is 10 + 5 x 5 + 20 = 55 epochs, above this operator's 40; the field
        # named is the largest part of it.
        body = assert_problem(client.post("/v1/jobs", json={"dataset_id": ids["a"]}, headers=auth), 422)
        assert body["field"] == "config.g.rounds_max" and "limit is 40" in body["detail"]
        short = {"dataset_id": ids["a"], "config": {"t": {"epochs": 5}}}
        for _ in range(2):
            assert client.post("/v1/jobs", json=short, headers=auth).status_code == 202
        refused = client.post("/v1/jobs", json=short, headers=auth)
        body = assert_problem(refused, 429)
        assert "GTC_MAX_ACTIVE_JOBS=2" in body["detail"] and body["limit"] == 2
        assert refused.headers["Retry-After"] == "60" and body["retry_after"] == 60
        other = {"dataset_id": ids["b"], "config": {"t": {"epochs": 5}}}
        assert client.post("/v1/jobs", json=other, headers=other_auth).status_code == 202  # per project
        first = client.get("/v1/jobs", headers=auth).json()["items"][0]["id"]
        assert client.post(f"/v1/jobs/{first}/cancel", headers=auth).status_code == 200
        assert client.post("/v1/jobs", json=short, headers=auth).status_code == 202  # a slot is free again
    assert len(train_queue()) == 4


def test_batch_ids_are_bounded(client: TestClient, auth: dict[str, str], dataset_id: str) -> None:
    many = [str(uuid.UUID(int=i + 1)) for i in range(MAX_BATCH_IDS + 1)]  # within the 1 MB JSON limit
    body = assert_problem(
        client.post("/v1/jobs", json={"dataset_id": dataset_id, "batch_ids": many}, headers=auth), 422
    )
    assert "batch_ids" in json.dumps(body)


def test_no_annotated_samples_is_422(client: TestClient, auth: dict[str, str], dataset_id: str) -> None:
    body = assert_problem(client.post("/v1/jobs", json={"dataset_id": dataset_id}, headers=auth), 422)
    assert "no annotated samples" in body["detail"]


def test_unknown_batch_is_422(
    client: TestClient, auth: dict[str, str], dataset_id: str, batch_id: str
) -> None:
    unknown = "00000000-0000-0000-0000-000000000001"
    body = {"dataset_id": dataset_id, "batch_ids": [batch_id, unknown]}
    assert unknown in assert_problem(client.post("/v1/jobs", json=body, headers=auth), 422)["detail"]


def test_cancel_queued_job_then_conflict(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], dataset_id: str, batch_id: str
) -> None:
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id}, headers=auth).json()
    assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel", headers=other_auth), 404)
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cancel_requested"] is True
    assert cancelled.json()["finished_at"] is not None
    again = assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth), 409)
    assert "cancelled" in again["detail"]


def test_cancel_running_job_only_sets_the_flag(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    batch_id: str,
    db_session_factory: sessionmaker[Session],
) -> None:
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id}, headers=auth).json()
    with session_scope(db_session_factory) as session:
        row = session.get(TrainingJob, uuid.UUID(job["id"]))
        assert row is not None
        row.status = JobStatus.running
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).json()
    assert response["status"] == "running" and response["cancel_requested"] is True


def test_broker_down_keeps_the_job_queued_for_the_sweeper(
    settings: Settings, auth: dict[str, str], db_session_factory: sessionmaker[Session]
) -> None:
    # Outbox: the committed row is durable, so the API answers 202 and the sweeper sends it later
    # (tests/durability/test_broker_outage.py brings the broker back and sees the message arrive).
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0", "sweep_interval_s": 0})
    with TestClient(create_app(broken)) as test_client:
        dataset = test_client.post("/v1/datasets", json={"name": "d"}, headers=auth).json()["id"]
        test_client.post(
            f"/v1/datasets/{dataset}/images", files=files_part({"a.png": image_png(8, 8)}), headers=auth
        )
        test_client.post(
            f"/v1/datasets/{dataset}/annotation-batches",
            data={"annotator": "x"},
            files=files_part({"a.png": mask_png(8, 8)}),
            headers=auth,
        )
        response = test_client.post("/v1/jobs", json={"dataset_id": dataset}, headers=auth)
        assert response.status_code == 202, response.text
        job = test_client.get(f"/v1/jobs/{response.json()['id']}", headers=auth).json()
    assert job["status"] == "queued" and job["error"] is None, job
    with session_scope(db_session_factory) as session:
        row = session.get(TrainingJob, uuid.UUID(job["id"]))
        assert row is not None and row.progress["dispatch"] == "pending", row.progress if row else None
        assert "127.0.0.1:1" in row.progress["dispatch_error"]


def test_dataset_with_an_unfinished_job_cannot_be_deleted(
    client: TestClient, auth: dict[str, str], dataset_id: str, batch_id: str
) -> None:
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id}, headers=auth).json()
    body = assert_problem(client.delete(f"/v1/datasets/{dataset_id}", headers=auth), 409)
    assert job["id"] in body["detail"]
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).json()["status"] == "cancelled"
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 204
    assert_problem(client.get(f"/v1/jobs/{job['id']}", headers=auth), 404)


def test_a_preset_by_name_with_the_config_on_top(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    batch_id: str,
    train_queue: Callable[[], list[dict[str, Any]]],
    db_session_factory: sessionmaker[Session],
) -> None:
    presets = client.get("/v1/config/presets", headers=auth).json()
    by_name = {p["name"]: p for p in presets["items"]}
    assert presets["total"] == len(by_name) >= 4 and by_name["benchmark"]["epochs"] == 40
    assert by_name["quick"]["config"]["image_size"] == 64 and by_name["quick"]["description"]
    body = {"dataset_id": dataset_id, "preset": "quick", "config": {"g": {"rounds_max": 1}}}
    job = client.post("/v1/jobs", json=body, headers=auth)
    assert job.status_code == 202, job.text
    stored = job.json()["config"]
    assert (stored["image_size"], stored["g"]["warmup_epochs"], stored["g"]["rounds_max"]) == (64, 6, 1)
    unknown = client.post("/v1/jobs", json={"dataset_id": dataset_id, "preset": "fast"}, headers=auth)
    problem = assert_problem(unknown, 422)
    assert problem["field"] == "preset" and "quick" in problem["detail"]
    assert count_rows(db_session_factory, TrainingJob) == 1 and len(train_queue()) == 1
