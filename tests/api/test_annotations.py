"""Annotation batches: matching masks to samples, validation, all-or-nothing storage."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Annotation, AnnotationBatch
from app.storage import ObjectStore
from tests.api.conftest import (
    assert_problem,
    count_rows,
    files_part,
    image_png,
    mask_png,
    png_bytes,
    zip_bytes,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def samples(client: TestClient, auth: dict[str, str], dataset_id: str) -> dict[str, str]:
    """Two samples, img01.jpg-like names with different extensions: file name -> sample id."""
    entries = {"img01.png": image_png(32, 48, 1), "IMG02.png": image_png(40, 40, 2)}
    response = client.post(f"/v1/datasets/{dataset_id}/images", files=files_part(entries), headers=auth)
    assert response.status_code == 201, response.text
    return {f["file"]: f["id"] for f in response.json()["files"]}


def _post_batch(
    client: TestClient,
    dataset_id: str,
    auth: dict[str, str],
    entries: dict[str, bytes],
    annotator: str = "vendor-a",
    **form: str,
) -> Any:
    return client.post(
        f"/v1/datasets/{dataset_id}/annotation-batches",
        data={"annotator": annotator, "source": "round 1", **form},
        files=files_part(entries),
        headers=auth,
    )


def test_batch_is_matched_by_stem_and_stored(
    client: TestClient, auth: dict[str, str], dataset_id: str, samples: dict[str, str], store: ObjectStore
) -> None:
    # Stems match case-insensitively; 0/255 masks are accepted for a binary label map.
    response = _post_batch(
        client, dataset_id, auth, {"IMG01.png": mask_png(32, 48, 255), "img02.png": mask_png(40, 40)}
    )
    assert response.status_code == 201, response.text
    batch = response.json()
    assert batch["status"] == "accepted" and batch["annotator"] == "vendor-a"
    assert {(f["file"], f["sample"]) for f in batch["report"]["files"]} == {
        ("IMG01.png", "img01.png"),
        ("img02.png", "IMG02.png"),
    }
    assert response.headers["location"].endswith(batch["id"])
    one = client.get(f"/v1/datasets/{dataset_id}/annotation-batches/{batch['id']}", headers=auth).json()
    assert one["report"]["accepted"] == 2
    listed = client.get(
        f"/v1/datasets/{dataset_id}/annotation-batches", params={"annotator": "vendor-a"}, headers=auth
    ).json()
    assert listed["total"] == 1
    masks = [k for k in store.list() if "/annotations/" in k]
    assert len(masks) == 2
    from gtcorrect.data import read_mask

    stored = read_mask(store.get(masks[0]), num_classes=2)
    assert set(np.unique(stored).tolist()) == {0, 1}


def _jpeg_mask(height: int, width: int) -> bytes:
    """A 0/255 disc saved as JPEG: compression leaves grey values around 0 and 255 (as in Kvasir-SEG)."""
    yy, xx = np.mgrid[:height, :width]
    disc = ((yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 3) ** 2) * 255
    buffer = io.BytesIO()
    Image.fromarray(disc.astype(np.uint8)).save(buffer, format="JPEG", quality=75)
    return buffer.getvalue()


def test_jpeg_masks_need_binary_mode(
    client: TestClient, auth: dict[str, str], dataset_id: str, samples: dict[str, str], store: ObjectStore
) -> None:
    entries = {"img01.jpg": _jpeg_mask(32, 48)}
    refused = _post_batch(client, dataset_id, auth, entries)
    assert refused.status_code == 422
    assert refused.json()["invalid_files"][0]["file"] == "img01.jpg"
    assert "outside the label map" in refused.json()["invalid_files"][0]["reason"]
    # The fix is not in the files: the answer says which option to use, once, not per file.
    assert "mask_mode=binary" in refused.json()["hint"] and "mask_mode=binary" in refused.json()["detail"]
    accepted = _post_batch(client, dataset_id, auth, entries, mask_mode="binary")
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["report"]["mask_mode"] == "binary"
    from gtcorrect.data import read_mask

    stored = read_mask(store.get(next(k for k in store.list() if "/annotations/" in k)), num_classes=2)
    assert set(np.unique(stored).tolist()) == {0, 1}
    assert abs(stored.mean() - np.pi / 9 * 32 / 48) < 0.05  # the disc's area fraction, not noise


def test_manifest_maps_masks_to_samples(
    client: TestClient, auth: dict[str, str], dataset_id: str, samples: dict[str, str]
) -> None:
    manifest = b"mask,sample\nseg_a.png,img01.png\n"
    archive = zip_bytes({"seg_a.png": mask_png(32, 48), "manifest.csv": manifest})
    response = _post_batch(client, dataset_id, auth, {"masks.zip": archive})
    assert response.status_code == 201, response.text
    assert response.json()["report"]["files"][0]["sample_id"] == samples["img01.png"]


def _outside_label_map() -> bytes:
    mask = np.zeros((32, 48), dtype=np.uint8)
    mask[0, 0] = 3
    return png_bytes(mask)


@pytest.mark.parametrize(
    ("entries", "bad", "reason"),
    [
        ({"img01.png": mask_png(16, 16)}, "img01.png", "differs from image"),
        ({"img01.png": _outside_label_map()}, "img01.png", "outside the label map"),
        ({"img07.png": mask_png(32, 48)}, "img07.png", "no sample"),
        ({"img01.png": b"%PDF-1.4 not a mask"}, "img01.png", "not a readable image"),
        ({"x.zip": zip_bytes({"../img01.png": mask_png(32, 48)})}, "../img01.png", "escapes"),
        ({"img01.png": mask_png(32, 48), "img01.tif": mask_png(32, 48)}, "img01.tif", "2 masks"),
        (  # which sample was meant cannot be guessed: the last line no longer wins silently
            {
                "seg.zip": zip_bytes(
                    {
                        "seg_a.png": mask_png(32, 48),
                        "manifest.csv": b"mask,sample\nseg_a.png,img01.png\nSEG_A.png,IMG02.png\n",
                    }
                )
            },
            "manifest.csv",
            "mapped to both 'img01.png' and 'IMG02.png'",
        ),
    ],
)
def test_bad_batch_stores_nothing(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    samples: dict[str, str],
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
    entries: dict[str, bytes],
    bad: str,
    reason: str,
) -> None:
    good = {"IMG02.png": mask_png(40, 40)}  # a valid mask in the same batch is not stored either
    body = assert_problem(_post_batch(client, dataset_id, auth, {**good, **entries}), 422, bad)
    assert reason in next(f["reason"] for f in body["invalid_files"] if f["file"] == bad)
    assert count_rows(db_session_factory, AnnotationBatch) == 0
    assert count_rows(db_session_factory, Annotation) == 0
    assert [k for k in store.list() if "/annotations/" in k] == []


def test_names_in_either_unicode_form_are_one_name(
    client: TestClient, auth: dict[str, str], dataset_id: str
) -> None:
    nfc, nfd = "caf\u00e9.png", "cafe\u0301.png"  # é typed on Linux, and as macOS stores it
    first = client.post(
        f"/v1/datasets/{dataset_id}/images", files=files_part({nfd: image_png(16, 16, 1)}), headers=auth
    )
    assert first.status_code == 201, first.text
    assert first.json()["files"][0]["file"] == nfc
    again = client.post(
        f"/v1/datasets/{dataset_id}/images", files=files_part({nfc: image_png(16, 16, 1)}), headers=auth
    )
    assert again.json()["duplicates"] == 1 and again.json()["created"] == 0
    other = client.post(
        f"/v1/datasets/{dataset_id}/images", files=files_part({nfc: image_png(16, 16, 2)}), headers=auth
    )
    assert_problem(other, 422, nfc)
    batch = _post_batch(client, dataset_id, auth, {nfd: mask_png(16, 16)})
    assert batch.status_code == 201, batch.text
    assert batch.json()["report"]["files"][0]["sample"] == nfc


def test_annotator_is_required(client: TestClient, auth: dict[str, str], dataset_id: str) -> None:
    response = client.post(
        f"/v1/datasets/{dataset_id}/annotation-batches",
        files=files_part({"a.png": mask_png(8, 8)}),
        headers=auth,
    )
    body = assert_problem(response, 422)
    assert "annotator" in body["detail"]
