"""Strangers are turned away before their body is read, and a JSON body is bounded (app.api.gate,
app.api.limits), on the real app with real Postgres: the ASGI app is called directly so that the test
sees exactly how much of the body the API asked for."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import files_part, image_png

pytestmark = pytest.mark.integration

THIRTY_MB = 30 * 1024 * 1024


def _call(
    app: Any, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, Any], int]:
    """(status, JSON answer, body bytes the app read) of one request, the body offered in 64 kB chunks."""
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        if not chunks:
            return {"type": "http.disconnect"}
        chunk = chunks.pop(0)
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(payload or b"{}"), read


@pytest.mark.parametrize(
    "credentials",
    [{}, {"Authorization": "Bearer gtc_not-a-key-of-this-service-at-all"}, {"Cookie": "gtc_session=forged"}],
    ids=["no key", "wrong key", "forged session"],
)
def test_a_stranger_gets_401_before_the_body_is_read(client: TestClient, credentials: dict[str, str]) -> None:
    body = b'{"dataset_id": "' + b"x" * THIRTY_MB + b'"}'
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **credentials}
    status, problem, read = _call(client.app, "POST", "/v1/jobs", headers, body)
    assert status == 401 and problem["status"] == 401
    assert read == 0  # not one byte of the 30 MB came in


def test_a_json_body_above_its_limit_is_413_even_with_a_key(client: TestClient, auth: dict[str, str]) -> None:
    body = json.dumps({"dataset_id": "x" * (2 * 1024 * 1024)}).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **auth}
    status, problem, read = _call(client.app, "POST", "/v1/jobs", headers, body)
    assert status == 413 and "1048576 bytes" in problem["detail"] and read == 0
    # Streamed without a length, it is cut off as it passes the limit.
    del headers["Content-Length"]
    status, _, read = _call(client.app, "POST", "/v1/jobs", headers, body)
    assert status == 413 and read < 1024 * 1024 + 65536 * 2


def test_uploads_keep_their_own_larger_limit(
    client: TestClient, auth: dict[str, str], dataset_id: str
) -> None:
    big = image_png(1200, 1200, seed=4)  # a few MB of noise: over the JSON limit, within the upload one
    assert len(big) > 1024 * 1024
    response = client.post(
        f"/v1/datasets/{dataset_id}/images", files=files_part({"big.png": big}), headers=auth
    )
    assert response.status_code == 201, response.text


def test_reads_need_no_body_check_and_keys_still_work(client: TestClient, auth: dict[str, str]) -> None:
    assert client.get("/livez").status_code == 200
    assert client.post("/v1/datasets", json={"name": "fine"}, headers=auth).status_code == 201
    assert client.get("/v1/datasets").status_code == 401  # a GET without a key: the route's own 401


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        # Paths that one route per method serves: the 405 names every method, not the first route's.
        ("PUT", "/v1/jobs/{job}", "DELETE, GET"),
        ("PATCH", "/v1/datasets/{dataset}/annotation-batches/{job}", "DELETE, GET"),
        # A literal segment beside an id: a method-not-allowed, not a malformed id.
        ("GET", "/v1/datasets/{dataset}/annotation-batches/consensus", "POST"),
        ("PUT", "/v1/jobs/{job}/decisions/bulk", "POST"),
        ("POST", "/livez", "GET"),
    ],
)
def test_405_names_every_allowed_method(
    client: TestClient, auth: dict[str, str], dataset_id: str, method: str, path: str, allow: str
) -> None:
    url = path.format(dataset=dataset_id, job="6f1c1d0e-3d7a-4c4e-9a55-1b2f0f7f3c11")
    response = client.request(method, url, headers=auth)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    assert f"allowed: {allow}" in response.json()["detail"]
