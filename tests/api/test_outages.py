"""The API while a dependency is down: 503 with Retry-After naming the dependency (never its address,
bucket or keys), nothing changed, and the same request succeeds once it is back."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.main import create_app
from app.settings import Settings
from tests.api.conftest import files_part, image_png
from tests.support.proxy import Proxy, proxied_store

pytestmark = pytest.mark.integration


def _secrets(settings: Settings, *more: str) -> list[str]:
    return [settings.s3_endpoint, settings.s3_bucket, *more]


def _assert_unavailable(response: object, dependency: str, secrets: list[str]) -> None:
    assert response.status_code == 503, response.text  # type: ignore[attr-defined]
    assert response.headers["retry-after"] == "30"  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["dependency"] == dependency and "unavailable" in body["detail"]
    for secret in secrets:
        assert secret not in response.text, secret  # type: ignore[attr-defined]


def test_object_store_outage_is_a_503_and_changes_nothing(
    client: TestClient, auth: dict[str, str], dataset_id: str, settings: Settings, s3_proxy: Proxy
) -> None:
    upload = client.post(
        f"/v1/datasets/{dataset_id}/images", files=files_part({"a.png": image_png(20, 24)}), headers=auth
    )
    assert upload.status_code == 201, upload.text
    (sample,) = upload.json()["files"]
    proxied = proxied_store(settings, s3_proxy, retry_s=0.5)
    client.app.state.store = proxied  # type: ignore[attr-defined]
    image_url = f"/v1/datasets/{dataset_id}/samples/{sample['id']}/image"
    s3_proxy.cut()

    secrets = _secrets(settings, s3_proxy.endpoint, str(s3_proxy.port))
    _assert_unavailable(client.get(image_url, headers=auth), "object_store", secrets)
    _assert_unavailable(client.delete(f"/v1/datasets/{dataset_id}", headers=auth), "object_store", secrets)
    more = client.post(
        f"/v1/datasets/{dataset_id}/images", files=files_part({"b.png": image_png(20, 24, 2)}), headers=auth
    )
    _assert_unavailable(more, "object_store", secrets)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["object_store"] == "failed"

    s3_proxy.restore()
    samples = client.get(f"/v1/datasets/{dataset_id}/samples", headers=auth).json()["items"]
    assert [s["file_name"] for s in samples] == ["a.png"]  # the refused upload stored no row
    assert client.get(image_url, headers=auth).status_code == 200  # the refused delete deleted nothing
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 204


def test_database_outage_is_a_503_and_the_api_recovers(settings: Settings, auth: dict[str, str]) -> None:
    url = make_url(settings.resolved_database_url())
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = settings.model_copy(
        update={
            "database_url": url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
            "lookup_cache_seconds": 0,  # every request looks its key up: the gate's lookup meets the outage
        }
    )
    secrets = [str(proxy.port), url.database or "", url.username or ""]
    try:
        with TestClient(create_app(proxied)) as client:
            assert client.get("/v1/datasets", headers=auth).status_code == 200
            proxy.cut()
            down = client.get("/v1/datasets", headers=auth)
            _assert_unavailable(down, "database", secrets)
            # A request with a body has its key checked before the body is read (app.api.gate): the same
            # 503, not a 500 and a dropped connection.
            posted = client.post("/v1/datasets", json={"name": "x", "label_map": {"0": "bg"}}, headers=auth)
            _assert_unavailable(posted, "database", secrets)
            proxy.restore()
            assert client.get("/v1/datasets", headers=auth).status_code == 200
    finally:
        proxy.close()
