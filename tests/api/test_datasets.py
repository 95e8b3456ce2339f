"""Datasets CRUD, auth and project isolation, health probes, through HTTP on real services."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.storage import ObjectStore
from tests.api.conftest import assert_problem, files_part, image_png

pytestmark = pytest.mark.integration


def test_dataset_crud(client: TestClient, auth: dict[str, str], store: ObjectStore) -> None:
    created = client.post(
        "/v1/datasets", json={"name": "cells", "label_map": {"0": "background", "1": "cell"}}, headers=auth
    )
    assert created.status_code == 201, created.text
    dataset = created.json()
    assert created.headers["location"] == f"/v1/datasets/{dataset['id']}"
    assert dataset["label_map"] == {"0": "background", "1": "cell"}
    assert client.post("/v1/datasets", json={"name": "other"}, headers=auth).status_code == 201

    listed = client.get("/v1/datasets", params={"limit": 1}, headers=auth).json()
    assert listed["total"] == 2 and len(listed["items"]) == 1
    filtered = client.get("/v1/datasets", params={"name": "cel"}, headers=auth).json()
    assert [d["name"] for d in filtered["items"]] == ["cells"]

    url = f"/v1/datasets/{dataset['id']}"
    upload = client.post(f"{url}/images", files=files_part({"a.png": image_png(32, 40)}), headers=auth)
    assert upload.status_code == 201, upload.text
    assert client.get(url, headers=auth).json()["sample_count"] == 1
    stored = list(store.list())
    assert len(stored) == 1 and f"/datasets/{dataset['id']}/samples/" in stored[0]

    assert client.delete(url, headers=auth).status_code == 204
    assert_problem(client.get(url, headers=auth), 404)
    assert list(store.list()) == []


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({"name": "kvasir\u202etxt.exe"}, "name", "bidirectional controls U+202E"),
        ({"name": "a\x00b"}, "name", "control characters U+0000"),
        ({"name": "d", "label_map": {"0": "background", "1": "po\u2066lyp"}}, "label_map", "bidirectional"),
        ({"name": "d", "image_settings": {"x": "y" * 20_000}}, "image_settings", "above the limit of 16384"),
    ],
)
def test_bad_dataset_fields_are_named(
    client: TestClient, auth: dict[str, str], body: dict[str, object], field: str, needle: str
) -> None:
    problem = assert_problem(client.post("/v1/datasets", json=body, headers=auth), 422)
    assert problem["field"] == field and needle in problem["detail"], problem
    assert client.get("/v1/datasets", headers=auth).json()["total"] == 0


def test_duplicate_dataset_name_is_a_conflict(client: TestClient, auth: dict[str, str]) -> None:
    assert client.post("/v1/datasets", json={"name": "x"}, headers=auth).status_code == 201
    body = assert_problem(client.post("/v1/datasets", json={"name": "x"}, headers=auth), 409)
    assert "'x'" in body["detail"]


@pytest.mark.parametrize(
    ("label_map", "needle"),
    [
        ({"0": "polyp", "1": "background"}, "background"),
        ({"0": "background", "2": "polyp"}, "gaps"),
        ({"0": "background"}, "at least 2"),
        ({"zero": "background", "1": "polyp"}, "class indices"),
    ],
)
def test_label_map_is_validated(
    client: TestClient, auth: dict[str, str], label_map: dict[str, str], needle: str
) -> None:
    response = client.post("/v1/datasets", json={"name": "bad", "label_map": label_map}, headers=auth)
    body = assert_problem(response, 422)
    assert needle in body["detail"]
    assert client.get("/v1/datasets", headers=auth).json()["total"] == 0


def test_request_validation_errors_are_problems(client: TestClient, auth: dict[str, str]) -> None:
    body = assert_problem(client.post("/v1/datasets", json={"label_map": {}}, headers=auth), 422)
    assert "body.name" in body["detail"]
    assert_problem(client.get("/v1/datasets/not-a-uuid", headers=auth), 422)


def test_missing_or_wrong_key_is_401(client: TestClient) -> None:
    missing = assert_problem(client.get("/v1/datasets"), 401)
    assert "Authorization" in missing["detail"]
    assert client.get("/v1/datasets").headers["www-authenticate"] == "Bearer"
    assert_problem(client.get("/v1/datasets", headers={"Authorization": "Bearer gtc_wrongwrongwrong"}), 401)
    assert_problem(client.get("/v1/datasets", headers={"Authorization": "Bearer nope"}), 401)


def test_other_projects_dataset_is_404(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], dataset_id: str
) -> None:
    assert client.get(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 200
    assert_problem(client.get(f"/v1/datasets/{dataset_id}", headers=other_auth), 404)
    assert_problem(client.delete(f"/v1/datasets/{dataset_id}", headers=other_auth), 404)
    upload = client.post(
        f"/v1/datasets/{dataset_id}/images", files=files_part({"a.png": image_png(8, 8)}), headers=other_auth
    )
    assert_problem(upload, 404)
    assert client.get("/v1/datasets", headers=other_auth).json()["total"] == 0


def test_health_probes(client: TestClient) -> None:
    assert client.get("/livez").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "object_store": "ok"}


def test_readyz_names_the_failing_check(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 1: the broker check must fail and say so; the others stay ok.
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken)) as test_client:
        response = test_client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert "broker" in body["detail"]
    assert body["checks"] == {"database": "ok", "broker": "failed", "object_store": "ok"}
    # The probe needs no key: the connection error (host, port) is in the log, not in the answer.
    assert "127.0.0.1" not in response.text and "Error" not in response.text
    assert any("broker check failed" in r.getMessage() for r in caplog.records)


def test_docs_pages_work_offline(client: TestClient) -> None:
    # Every asset comes from the API itself: an offline hospital network still gets working pages.
    for page, assets in (
        (
            "/docs",
            ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/docs-assets/favicon.png"),
        ),
        ("/redoc", ("/docs-local/redoc.standalone.js", "/favicon.ico")),
    ):
        html = client.get(page)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        assert "cdn." not in html.text and "fonts.googleapis" not in html.text, page
        for asset in assets:
            assert asset in html.text
            served = client.get(asset)
            assert served.status_code == 200 and len(served.content) > 1000, asset
    # ReDoc's bundle asks a CDN for its "powered by" logo; the one served here asks the API.
    bundle = client.get("/docs-local/redoc.standalone.js").text
    assert "cdn.redoc.ly" not in bundle and "/docs-local/logo-mini.svg" in bundle
    assert client.get("/docs-local/logo-mini.svg").headers["content-type"].startswith("image/svg+xml")


def test_every_page_has_an_icon(client: TestClient) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/png"
    assert icon.content.startswith(b"\x89PNG")
    assert 'rel="icon" href="/favicon.ico"' in client.get("/review/login").text


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/jobs" in spec["paths"] and "/v1/models/{model_ref}/segment" in spec["paths"]
    assert spec["paths"]["/v1/jobs"]["post"]["summary"] == "Start a training job"
