"""The catalogue of bad uploads: every case is refused with a problem naming the file and the reason,
and nothing is stored (no new rows, no new objects under the project's prefix).

Limits are lowered in the settings so that bombs and oversized bodies stay a few kilobytes.
"""

from __future__ import annotations

import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Annotation, AnnotationBatch, Dataset, Sample
from app.db.session import session_scope
from app.main import create_app
from app.settings import Settings
from app.storage import ObjectStore
from tests.api.bad_files import (
    GOOD_MASK,
    PNG,
    as_zip,
    encoded,
    parts,
    png_declaring,
    tar_of,
    two_symbol_noise,
    zip_of,
    zip_with_raw_name,
)
from tests.api.conftest import files_part, image_png, mask_png, png_bytes

pytestmark = pytest.mark.integration

LIMITS = {"max_upload_bytes": 200_000, "max_image_pixels": 10_000, "max_zip_ratio": 50, "max_zip_entries": 20}
PROBLEM_BASE = "https://gtcorrect.dev/problems/"
# 422 from the services is "Invalid input"; from FastAPI's request parsing, "Request validation failed".
TITLES = {
    415: {"Unsupported media type"},
    413: {"Payload too large"},
    422: {"Invalid input", "Request validation failed"},
}


# ---- the service under test, with low limits, and what it holds ----


@dataclass
class World:
    client: TestClient
    auth: dict[str, str]
    dataset: str
    project: uuid.UUID
    factory: sessionmaker[Session]
    store: ObjectStore

    def snapshot(self) -> tuple[int, int, int, list[str]]:
        with session_scope(self.factory) as session:
            counts = [session.query(m).count() for m in (Sample, AnnotationBatch, Annotation)]
        return counts[0], counts[1], counts[2], sorted(self.store.list(f"{self.project}/"))

    def images(self, parts: list[Any]) -> Any:
        return self.client.post(f"/v1/datasets/{self.dataset}/images", files=parts, headers=self.auth)

    def batch(self, parts: list[Any], annotator: str = "vendor-a") -> Any:
        return self.client.post(
            f"/v1/datasets/{self.dataset}/annotation-batches",
            data={"annotator": annotator},
            files=parts,
            headers=self.auth,
        )


@pytest.fixture
def world(
    settings: Settings, auth: dict[str, str], store: ObjectStore, db_session_factory: sessionmaker[Session]
) -> Iterator[World]:
    with TestClient(create_app(settings.model_copy(update=LIMITS))) as client:
        body = {"name": "catalogue", "label_map": {"0": "background", "1": "polyp"}}
        dataset = client.post("/v1/datasets", json=body, headers=auth).json()["id"]
        # One sample to annotate: img01.png, 48 wide and 32 high.
        seeded = client.post(
            f"/v1/datasets/{dataset}/images", files=files_part({"img01.png": image_png(32, 48)}), headers=auth
        )
        assert seeded.status_code == 201, seeded.text
        with session_scope(db_session_factory) as session:
            project = session.get_one(Dataset, uuid.UUID(dataset)).project_id
        yield World(client, auth, dataset, project, db_session_factory, store)


def check_refused(world: World, response: Any, status: int, file: str | None, needle: str) -> dict[str, Any]:
    """The response is the ``status`` problem naming ``file`` with ``needle`` in its reason (or in the
    detail when ``file`` is None)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] in TITLES[status]
    assert body["type"].startswith(PROBLEM_BASE) and body["detail"]
    if file is None:
        assert needle in body["detail"], body
    else:
        reasons = [entry["reason"] for entry in body.get("invalid_files", []) if entry["file"] == file]
        assert any(needle in r for r in reasons), body
    return body


# ---- cases shared by image uploads and annotation batches ----
# (id, multipart parts, status, file named, reason); masks are named after img01 so only the fault differs.

ARCHIVE_CASES: list[tuple[str, list[Any], int, str | None, str]] = [
    ("zip-dotdot", as_zip([("../img01.png", PNG)]), 422, "../img01.png", "escapes the archive root"),
    ("zip-abs-posix", as_zip([("/img01.png", PNG)]), 422, "/img01.png", "escapes the archive root"),
    ("zip-abs-windows", as_zip([("C:\\img01.png", PNG)]), 422, "C:\\img01.png", "escapes the archive root"),
    ("zip-ratio-bomb", as_zip([("img01.png", bytes(150_000))]), 422, "img01.png", "compression ratio"),
    (
        "zip-total-bomb",
        as_zip([(f"p{i}.png", two_symbol_noise(70_000)) for i in range(3)]),
        413,
        None,
        "uncompressed",
    ),
    ("zip-nested-zip", as_zip([("inner.zip", zip_of([("a.png", PNG)]))]), 422, "inner.zip", "nested"),
    ("zip-nested-tar", as_zip([("inner.tar", tar_of("a.png", PNG))]), 422, "inner.tar", "nested"),
    ("zip-nested-gz", as_zip([("img01.png.gz", zlib.compress(PNG))]), 422, "img01.png.gz", "nested"),
    (
        "zip-tar-renamed",
        parts([("upload.zip", zip_of([("img01.png", tar_of("a.png", PNG))], zipfile.ZIP_STORED))]),
        422,
        "img01.png",
        "nested",
    ),
    ("tar-upload", parts([("images.tar", tar_of("img01.png", PNG))]), 422, "images.tar", "only zip"),
    (
        "zip-corrupt",
        parts([("upload.zip", b"PK\x03\x04" + bytes(40))]),
        422,
        "upload.zip",
        "not a readable zip",
    ),
    (
        "zip-bad-crc",
        parts(
            [
                (
                    "upload.zip",
                    zip_of([("img01.png", b"A" * 64)], zipfile.ZIP_STORED).replace(b"A" * 64, b"B" * 64),
                )
            ]
        ),
        422,
        "img01.png",
        "corrupt archive entry",
    ),
    ("zip-empty", parts([("upload.zip", zip_of([]))]), 422, "upload.zip", "holds no files"),
    ("zip-only-junk", as_zip([("__MACOSX/._img01.png", b"x"), ("d/", b"")]), 422, "upload.zip", "no files"),
    ("zip-same-name-twice", as_zip([("img01.png", PNG), ("img01.png", PNG)]), 422, "img01.png", "twice"),
    (
        "zip-non-utf8-name",
        parts([("upload.zip", zip_with_raw_name(b"\xff\xfe01.png", PNG))]),
        422,
        "\u00a0\u25a001.png",
        "not valid UTF-8",
    ),
    ("zip-control-chars", as_zip([("img\x0101.png", PNG)]), 422, "img\x0101.png", "control characters"),
    # U+202E turns "img01\u202egnp.exe" into "img01exe.png" on screen.
    ("bidi-name", parts([("img01\u202egnp.png", PNG)]), 422, "img01\u202egnp.png", "bidirectional controls"),
    ("dot-dot-name", parts([("..", PNG)]), 422, "..", "must not be '.', '..'"),
    ("zip-long-name", as_zip([("i" * 300 + ".png", PNG)]), 422, "i" * 300 + ".png", "above the limit of 255"),
    ("multipart-long-name", parts([("i" * 300 + ".png", PNG)]), 422, "i" * 300 + ".png", "above the limit"),
    ("too-large-body", parts([("img01.png", bytes(250_000))]), 413, None, "larger than the limit"),
    ("empty-file", parts([("img01.png", b"")]), 422, "img01.png", "file is empty"),
    (
        "png-cut-in-half",
        parts([("img01.png", PNG[: len(PNG) // 2])]),
        422,
        "img01.png",
        "not a readable image",
    ),
    (
        "random-bytes",
        parts([("img01.png", np.random.default_rng(1).bytes(500))]),
        422,
        "img01.png",
        "not a readable",
    ),
    ("gif", parts([("img01.gif", encoded("GIF"))]), 422, "img01.gif", "unsupported image format GIF"),
    ("gif-renamed", parts([("img01.png", encoded("GIF"))]), 422, "img01.png", "unsupported image format GIF"),
    ("webp", parts([("img01.webp", encoded("WEBP"))]), 422, "img01.webp", "unsupported image format WEBP"),
    (
        "pdf-renamed",
        parts([("img01.png", b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF")]),
        422,
        "img01.png",
        "not a",
    ),
    (
        "pixels-over-limit",
        parts([("img01.png", png_declaring(5_000, 5_000))]),
        422,
        "img01.png",
        "max_pixels",
    ),
    ("pixel-bomb-header", parts([("img01.png", png_declaring(30_000, 30_000))]), 422, "img01.png", "pixels"),
]


@pytest.mark.parametrize(
    ("entries", "status", "file", "needle"), [c[1:] for c in ARCHIVE_CASES], ids=[c[0] for c in ARCHIVE_CASES]
)
def test_bad_image_upload_is_refused_and_stores_nothing(
    world: World, entries: list[Any], status: int, file: str | None, needle: str
) -> None:
    before = world.snapshot()
    check_refused(world, world.images(entries), status, file, needle)
    assert world.snapshot() == before


@pytest.mark.parametrize(
    ("entries", "status", "file", "needle"), [c[1:] for c in ARCHIVE_CASES], ids=[c[0] for c in ARCHIVE_CASES]
)
def test_bad_annotation_batch_is_refused_and_stores_nothing(
    world: World, entries: list[Any], status: int, file: str | None, needle: str
) -> None:
    before = world.snapshot()
    check_refused(world, world.batch(entries), status, file, needle)
    assert world.snapshot() == before


MASK_CASES: list[tuple[str, list[Any], int, str, str]] = [
    ("size-mismatch", parts([("img01.png", mask_png(32, 32))]), 422, "img01.png", "differs from image"),
    (
        "values-outside-label-map",
        parts([("img01.png", mask_png(32, 48, 7))]),
        422,
        "img01.png",
        "outside the label",
    ),
    ("colour-mask", parts([("img01.png", image_png(32, 48))]), 422, "img01.png", "single-channel"),
    ("unknown-sample", parts([("nosuch.png", GOOD_MASK)]), 422, "nosuch.png", "no sample in the dataset"),
    (
        "two-masks-one-sample",
        parts([("img01.png", GOOD_MASK), ("IMG01.bmp", encoded("BMP", 32, 48))]),
        422,
        "IMG01.bmp",
        "2 masks match sample img01.png",
    ),
    (
        "manifest-unknown-sample",
        parts([("m.png", GOOD_MASK), ("manifest.csv", b"mask,sample\nm.png,ghost.png\n")]),
        422,
        "m.png",
        "ghost.png",
    ),
    (
        "manifest-unreadable",
        parts([("img01.png", GOOD_MASK), ("manifest.json", b"{")]),
        422,
        "manifest.json",
        "manifest",
    ),
]


@pytest.mark.parametrize(
    ("entries", "status", "file", "needle"), [c[1:] for c in MASK_CASES], ids=[c[0] for c in MASK_CASES]
)
def test_bad_masks_are_refused_and_store_nothing(
    world: World, entries: list[Any], status: int, file: str, needle: str
) -> None:
    before = world.snapshot()
    check_refused(world, world.batch(entries), status, file, needle)
    assert world.snapshot() == before


def test_one_bad_mask_rejects_the_good_ones_too(world: World) -> None:
    before = world.snapshot()
    response = world.batch(parts([("img01.png", GOOD_MASK), ("nosuch.png", GOOD_MASK)]))
    check_refused(world, response, 422, "nosuch.png", "no sample")
    assert world.snapshot() == before
    accepted = world.batch(parts([("img01.png", GOOD_MASK)]))  # the same good mask alone is fine
    assert accepted.status_code == 201, accepted.text
    assert world.snapshot()[1:3] == (before[1] + 1, before[2] + 1)


@pytest.mark.parametrize(
    ("annotator", "needle"),
    [("", "annotator"), ("vendor\x00a", "control characters"), ("ann\u202eeve", "bidirectional")],
    ids=["empty", "nul-character", "bidi-control"],
)
def test_bad_annotator_is_refused(world: World, annotator: str, needle: str) -> None:
    before = world.snapshot()
    response = world.batch(parts([("img01.png", GOOD_MASK)]), annotator=annotator)
    body = check_refused(world, response, 422, None, needle)
    assert "annotator" in str(body)
    assert world.snapshot() == before


@pytest.mark.parametrize("endpoint", ["images", "annotation-batches"])
def test_json_body_to_a_multipart_endpoint_is_415(world: World, endpoint: str) -> None:
    before = world.snapshot()
    url = f"/v1/datasets/{world.dataset}/{endpoint}"
    response = world.client.post(url, json={"files": ["img01.png"]}, headers=world.auth)
    check_refused(world, response, 415, None, "application/json")
    assert world.snapshot() == before


@pytest.mark.parametrize("endpoint", ["images", "annotation-batches"])
def test_multipart_without_files_is_422(world: World, endpoint: str) -> None:
    before = world.snapshot()
    url = f"/v1/datasets/{world.dataset}/{endpoint}"
    other = [("unrelated", ("a.txt", b"x", "text/plain"))]
    response = world.client.post(url, data={"annotator": "a"}, files=other, headers=world.auth)
    check_refused(world, response, 422, None, "files")
    assert world.snapshot() == before


def test_good_upload_still_works_under_the_low_limits(world: World) -> None:
    """The limits refuse only what they should: a small image and a utf-8 name in a zip pass."""
    before = world.snapshot()
    response = world.images(as_zip([("dir/\u00e9t\u00e9.png", png_bytes(np.full((8, 8), 9, np.uint8)))]))
    assert response.status_code == 201, response.text
    assert response.json()["files"][0]["file"] == "\u00e9t\u00e9.png"
    assert world.snapshot()[0] == before[0] + 1


@pytest.mark.parametrize(
    ("method", "url", "payload", "needle"),
    [
        # (NUL in a dataset name is refused before the database: test_datasets.py names the field.)
        ("GET", "/v1/datasets?name=x%00", None, "NUL"),
    ],
    ids=["nul-in-query"],
)
def test_values_the_database_refuses_are_422_not_500(
    world: World, method: str, url: str, payload: dict[str, str] | None, needle: str
) -> None:
    """Postgres refuses NUL in text and integers above 2**63 - 1; that is the client's error."""
    before = world.snapshot()
    response = world.client.request(method, url, json=payload, headers=world.auth)
    body = check_refused(world, response, 422, None, "cannot be stored or compared")
    assert needle in body["reason"]
    assert world.snapshot() == before


def test_offset_above_bigint_is_a_422_naming_the_parameter(world: World) -> None:
    """Found by test_fuzz: Postgres refused ?offset=2**63; the parameter's own bound now names it."""
    response = world.client.get("/v1/datasets?offset=9223372036854775808", headers=world.auth)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "offset" in response.text


def test_a_body_that_is_not_json_says_so_and_where(world: World) -> None:
    """A newcomer's curl with a stray quote got 'body.15: JSON decode error'; the problem now names the
    body and the position, in words."""
    response = world.client.post(
        "/v1/datasets",
        content=b'{"name": "x", "label_map"}',
        headers={**world.auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    body = response.json()
    assert "the request body is not valid JSON at character" in body["detail"]
    assert [e["field"] for e in body["errors"]] == ["body"]
    assert "body.25" not in body["detail"]
