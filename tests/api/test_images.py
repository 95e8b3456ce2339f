"""Image uploads: multipart and zip, duplicates, all-or-nothing rejection with nothing stored."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Sample
from app.main import create_app
from app.settings import Settings
from app.storage import ObjectStore
from tests.api.conftest import (
    assert_problem,
    count_rows,
    files_part,
    image_png,
    png_bytes,
    upload_images,
    zip_bytes,
)

pytestmark = pytest.mark.integration


def test_multipart_upload_stores_pngs_and_reports_duplicates(
    client: TestClient, auth: dict[str, str], dataset_id: str, store: ObjectStore
) -> None:
    first = upload_images(
        client, dataset_id, auth, {"img01.png": image_png(32, 48, 1), "img02.png": image_png(40, 32, 2)}
    )
    assert first.status_code == 201, first.text
    assert first.json()["created"] == 2 and first.json()["duplicates"] == 0

    again = upload_images(
        client, dataset_id, auth, {"copy.png": image_png(32, 48, 1), "img03.png": image_png(32, 32, 3)}
    )
    body = again.json()
    assert (body["created"], body["duplicates"]) == (1, 1)
    duplicate = next(f for f in body["files"] if f["file"] == "copy.png")
    assert duplicate["status"] == "duplicate" and "img01.png" in duplicate["reason"]

    samples = client.get(f"/v1/datasets/{dataset_id}/samples", headers=auth).json()
    assert samples["total"] == 3
    img02 = next(s for s in samples["items"] if s["file_name"] == "img02.png")
    assert (img02["width"], img02["height"], img02["channels"]) == (32, 40, 3)
    stored = client.get(f"/v1/datasets/{dataset_id}/samples/{img02['id']}/image", headers=auth)
    assert stored.headers["content-type"] == "image/png"
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(stored.content))),
        np.asarray(Image.open(io.BytesIO(image_png(40, 32, 2)))),
    )
    assert len(list(store.list())) == 3


def test_zip_upload_ignores_folders_and_macos_files(
    client: TestClient, auth: dict[str, str], dataset_id: str
) -> None:
    jpeg = io.BytesIO()
    Image.fromarray(np.full((24, 24), 128, dtype=np.uint8)).save(jpeg, format="JPEG")
    archive = zip_bytes(
        {
            "images/a.png": image_png(16, 16, 1),
            "images/b.jpg": jpeg.getvalue(),
            "__MACOSX/images/._a.png": b"junk",
            "images/.DS_Store": b"junk",
        }
    )
    response = upload_images(client, dataset_id, auth, {"batch.zip": archive})
    assert response.status_code == 201, response.text
    assert sorted(f["file"] for f in response.json()["files"]) == ["a.png", "b.jpg"]
    grey = client.get(
        f"/v1/datasets/{dataset_id}/samples", params={"file_name": "b.jpg"}, headers=auth
    ).json()
    assert grey["items"][0]["channels"] == 1


def test_one_bad_file_rejects_the_wholeupload_images(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
) -> None:
    response = upload_images(
        client, dataset_id, auth, {"good.png": image_png(16, 16), "notes.png": b"not an image"}
    )
    body = assert_problem(response, 422, "notes.png")
    reason = next(f["reason"] for f in body["invalid_files"] if f["file"] == "notes.png")
    assert "not a readable image" in reason
    assert "object at 0x" not in reason and "BytesIO" not in reason  # no internals of ours, the reason
    assert "good.png" not in {f["file"] for f in body["invalid_files"]}
    assert count_rows(db_session_factory, Sample) == 0
    assert list(store.list()) == []


@pytest.mark.parametrize(
    ("entries", "bad", "reason"),
    [
        ({"../evil.png": image_png(8, 8)}, "../evil.png", "escapes"),
        ({"/abs.png": image_png(8, 8)}, "/abs.png", "escapes"),
        ({"inner.zip": zip_bytes({"a.png": image_png(8, 8)})}, "inner.zip", "nested"),
        ({"bomb.png": bytes(2_000_000)}, "bomb.png", "compression ratio"),
    ],
)
def test_unsafe_zip_entries_are_rejected(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
    entries: dict[str, bytes],
    bad: str,
    reason: str,
) -> None:
    archive = zip_bytes({"ok.png": image_png(8, 8), **entries})
    body = assert_problem(upload_images(client, dataset_id, auth, {"upload.zip": archive}), 422, bad)
    assert reason in next(f["reason"] for f in body["invalid_files"] if f["file"] == bad)
    assert count_rows(db_session_factory, Sample) == 0
    assert list(store.list()) == []


def test_duplicate_file_names_are_rejected(client: TestClient, auth: dict[str, str], dataset_id: str) -> None:
    archive = zip_bytes({"a/x.png": image_png(8, 8, 1), "b/x.png": image_png(8, 8, 2)})
    body = assert_problem(upload_images(client, dataset_id, auth, {"u.zip": archive}), 422, "x.png")
    assert "twice" in body["invalid_files"][0]["reason"]


def test_body_over_the_limit_is_413(
    settings: Settings, db_session_factory: sessionmaker[Session], auth: dict[str, str]
) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 10_000})
    with TestClient(create_app(small)) as test_client:
        dataset = test_client.post("/v1/datasets", json={"name": "d"}, headers=auth).json()
        big = png_bytes(np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8))
        url = f"/v1/datasets/{dataset['id']}/images"
        response = test_client.post(url, files=files_part({"big.png": big}), headers=auth)
        # Without a Content-Length (chunked), the body is counted as it streams in.
        chunks = (b"-" * 4096 for _ in range(5))
        streamed = test_client.post(
            url, content=chunks, headers={**auth, "content-type": "multipart/form-data; boundary=xyz"}
        )
    assert "content-length" not in streamed.request.headers
    assert_problem(response, 413)
    assert_problem(streamed, 413)
    assert count_rows(db_session_factory, Sample) == 0


class FailingStore:
    """The real store, except that the ``fail_at``-th ``put`` raises (a full disk, a network cut)."""

    def __init__(self, inner: ObjectStore, fail_at: int) -> None:
        self.inner, self.fail_at, self.puts = inner, fail_at, 0

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.puts += 1
        if self.puts == self.fail_at:
            raise OSError(f"simulated storage failure writing {key}")
        self.inner.put(key, data, content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_failed_write_leaves_no_rows_and_no_objects(
    settings: Settings, auth: dict[str, str], store: ObjectStore, db_session_factory: sessionmaker[Session]
) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        dataset = test_client.post("/v1/datasets", json={"name": "d"}, headers=auth).json()["id"]
        test_client.app.state.store = FailingStore(store, fail_at=2)  # type: ignore[attr-defined]
        entries = {"a.png": image_png(8, 8, 1), "b.png": image_png(8, 8, 2), "c.png": image_png(8, 8, 3)}
        response = upload_images(test_client, dataset, auth, entries)
    body = assert_problem(response, 500)
    assert "simulated" not in body["detail"]  # internals are logged, not shown
    assert count_rows(db_session_factory, Sample) == 0
    assert list(store.list()) == []  # the first image was written, then removed again


def test_non_multipart_upload_is_415(client: TestClient, auth: dict[str, str], dataset_id: str) -> None:
    response = client.post(f"/v1/datasets/{dataset_id}/images", json={"files": ["a.png"]}, headers=auth)
    assert "application/json" in assert_problem(response, 415)["detail"]
