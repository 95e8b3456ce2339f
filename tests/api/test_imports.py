"""Annotation batches from an annotation tool's export, over HTTP: a COCO JSON document, a CVAT for images
XML file and a Label Studio JSON export. The stored masks are pixel for pixel what pycocotools (the
reference COCO reader) draws, and a bad export stores nothing and names its entries."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as coco_mask
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Annotation, AnnotationBatch
from app.storage import ObjectStore
from gtcorrect.brush import encode_brush
from tests.api.conftest import (
    assert_problem,
    count_rows,
    files_part,
    image_png,
    mask_png,
    upload_masks,
    zip_bytes,
)
from tests.gtcorrect.test_imports import BRUSH_WHITE, cvat_rle, cvat_xml, ls_annotation, ls_result, ls_task

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

LUNG = [[3.5, 2.0, 40.2, 4.0, 38.0, 25.5, 6.0, 28.0], [44, 5, 46, 5, 46, 9]]  # two parts, one region


@pytest.fixture
def chest(client: TestClient, auth: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A three-class dataset with three images: (dataset id, file name -> sample id)."""
    body = {"name": "chest", "label_map": {"0": "background", "1": "lung", "2": "heart"}}
    dataset_id = client.post("/v1/datasets", json=body, headers=auth).json()["id"]
    images = {
        "case1.png": image_png(32, 48, 1),
        "case2.png": image_png(32, 48, 2),
        "case3.png": image_png(20, 20, 3),
    }
    upload = client.post(f"/v1/datasets/{dataset_id}/images", files=files_part(images), headers=auth)
    assert upload.status_code == 201, upload.text
    return dataset_id, {f["file"]: f["id"] for f in upload.json()["files"]}


def _coco(annotations: list[dict[str, Any]], categories: list[dict[str, Any]] | None = None) -> bytes:
    doc = {
        "images": [
            {"id": 11, "file_name": "train/case1.jpg", "height": 32, "width": 48},
            {"id": 12, "file_name": "case2.png", "height": 32, "width": 48},
            {"id": 13, "file_name": "case3.png", "height": 20, "width": 20},
        ],
        "categories": categories or [{"id": 1, "name": "Lung"}, {"id": 2, "name": "heart"}],
        "annotations": annotations,
    }
    return json.dumps(doc).encode()


def _post(client: TestClient, dataset_id: str, auth: dict[str, str], entries: dict[str, bytes]) -> Any:
    return upload_masks(client, dataset_id, auth, entries, "cvat-export")


@pytest.mark.parametrize("zipped", [False, True], ids=["json", "zipped-json (as the client sends it)"])
def test_coco_polygons_and_rle_become_the_masks_pycocotools_reads(
    client: TestClient, auth: dict[str, str], chest: tuple[str, dict[str, str]], zipped: bool
) -> None:
    dataset_id, samples = chest
    heart = np.zeros((32, 48), np.uint8)
    heart[10:20, 15:30] = 1
    compressed = coco_mask.encode(np.asfortranarray(heart))
    uncompressed = {"size": [32, 48], "counts": [0, 32 * 48]}  # every pixel: the whole image is heart
    annotations = [
        {"id": 1, "image_id": 11, "category_id": 1, "segmentation": LUNG, "iscrowd": 0},
        {"id": 2, "image_id": 11, "category_id": 2, "iscrowd": 1,
         "segmentation": {"size": [32, 48], "counts": compressed["counts"].decode()}},
        {"id": 3, "image_id": 12, "category_id": 2, "segmentation": uncompressed, "iscrowd": 1},
    ]  # fmt: skip
    document = {"export.json": _coco(annotations)}
    response = _post(client, dataset_id, auth, {"export.zip": zip_bytes(document)} if zipped else document)
    assert response.status_code == 201, response.text
    batch = response.json()
    assert batch["report"]["format"] == "coco" and batch["report"]["accepted"] == 3
    by_sample = {f["sample"]: f["file"] for f in batch["report"]["files"]}
    assert by_sample == {"case1.png": "train/case1.jpg", "case2.png": "case2.png", "case3.png": "case3.png"}

    def stored(name: str) -> np.ndarray:
        url = f"/v1/datasets/{dataset_id}/annotation-batches/{batch['id']}/masks/{samples[name]}"
        got = client.get(url, headers=auth)
        assert got.status_code == 200, got.text
        return np.asarray(Image.open(io.BytesIO(got.content)))

    lung = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(LUNG, 32, 48)))
    expected = np.where(heart == 1, 2, np.where(lung == 1, 1, 0))  # the later annotation on top
    np.testing.assert_array_equal(stored("case1.png"), expected)
    np.testing.assert_array_equal(stored("case2.png"), np.full((32, 48), 2))
    np.testing.assert_array_equal(stored("case3.png"), np.zeros((20, 20)))  # listed, nothing drawn


def _refused(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    store: ObjectStore,
    factory: sessionmaker[Session],
    entries: dict[str, bytes],
    named: str,
    reason: str,
) -> None:
    """The upload is a 422 naming the entry and why, and stores no batch, annotation or mask object."""
    body = assert_problem(_post(client, dataset_id, auth, entries), 422, named)
    assert reason in next(f["reason"] for f in body["invalid_files"] if f["file"] == named)
    assert count_rows(factory, AnnotationBatch) == 0
    assert count_rows(factory, Annotation) == 0
    assert [k for k in store.list() if "/annotations/" in k] == []


@pytest.mark.parametrize(
    ("entries", "named", "reason"),
    [
        ({"export.json": b"{not json"}, "export.json", "not valid JSON"),
        ({"export.json": b'{"masks": []}'}, "document", "neither a COCO document"),
        (
            {"export.json": _coco([{"image_id": 99, "category_id": 1, "segmentation": LUNG}])},
            "annotations[0]",
            "is not listed",
        ),
        (
            {"export.json": _coco([], categories=[{"id": 1, "name": "lung"}, {"id": 3, "name": "tumour"}])},
            "category 'tumour'",
            "not a class of the label map (lung, heart)",
        ),
        (
            {"export.json": _coco([{"image_id": 12, "category_id": 1, "segmentation": [[1, 2]]}])},
            "annotations[0]",
            "at least 3 x, y pairs",
        ),
        ({"export.json": _coco([]), "case1.png": mask_png(32, 48)}, "export.json", "uploaded alone"),
    ],
)
def test_a_bad_coco_document_stores_nothing_and_names_the_entry(
    client: TestClient,
    auth: dict[str, str],
    chest: tuple[str, dict[str, str]],
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
    entries: dict[str, bytes],
    named: str,
    reason: str,
) -> None:
    _refused(client, auth, chest[0], store, db_session_factory, entries, named, reason)


def test_a_coco_mask_of_the_wrong_size_is_refused_like_a_mask_file(
    client: TestClient, auth: dict[str, str], chest: tuple[str, dict[str, str]]
) -> None:
    doc = json.loads(_coco([]))
    doc["images"][2]["height"] = 21  # the export says 20x21, the uploaded image is 20x20
    body = assert_problem(
        _post(client, chest[0], auth, {"export.json": json.dumps(doc).encode()}), 422, "case3.png"
    )
    assert "differs from image case3.png size 20x20" in body["invalid_files"][0]["reason"]


def test_a_cvat_export_becomes_the_masks_it_draws(
    client: TestClient, auth: dict[str, str], chest: tuple[str, dict[str, str]], store: ObjectStore
) -> None:
    dataset_id, samples = chest
    heart = np.zeros((10, 15), bool)
    heart[2:8, 3:12] = True
    xml = cvat_xml(f"""
  <image id="0" name="case1.png" width="48" height="32">
    <polygon label="lung" source="manual" points="3.5,2.0;40.2,4.0;38.0,25.5;6.0,28.0" z_order="0"/>
    <mask label="heart" source="manual" occluded="0" rle="{cvat_rle(heart)}"
      left="15" top="10" width="15" height="10" z_order="1"/>
  </image>
  <image id="1" name="case2.png" width="48" height="32"></image>""")
    response = _post(client, dataset_id, auth, {"annotations.xml": xml})
    assert response.status_code == 201, response.text
    batch = response.json()
    assert batch["report"]["format"] == "cvat" and batch["report"]["accepted"] == 2
    url = f"/v1/datasets/{dataset_id}/annotation-batches/{batch['id']}/masks/{samples['case1.png']}"
    stored = np.asarray(Image.open(io.BytesIO(client.get(url, headers=auth).content)))
    lung = coco_mask.decode(
        coco_mask.merge(coco_mask.frPyObjects([[3.5, 2.0, 40.2, 4.0, 38.0, 25.5, 6.0, 28.0]], 32, 48))
    )
    expected = np.where(lung == 1, 1, 0)
    expected[10:20, 15:30][heart] = 2
    np.testing.assert_array_equal(stored, expected)

    bad = cvat_xml(
        '<image id="0" name="case3.png" width="20" height="20"><points label="lung" points="1,1"/></image>'
    )
    body = assert_problem(
        _post(client, dataset_id, auth, {"annotations.xml": bad}), 422, "case3.png: <points> 1"
    )
    assert "outlines no region" in body["invalid_files"][0]["reason"]


LS_LUNG = [[7.5, 6.25], [83.75, 12.5], [79.0, 80.0], [12.5, 87.5]]  # percent of 48 x 32


def _label_studio(heart: np.ndarray) -> list[dict[str, Any]]:
    """An export as Label Studio writes it: a brush heart over a polygon lung on an uploaded image, a box
    on another (drawn at its image's size), a task answered by a choice alone (background)."""
    lung = ls_result("polygonlabels", {"points": LS_LUNG, "closed": True, "polygonlabels": ["Lung"]}, 32, 48)
    brush = {"format": "rle", "rle": encode_brush(heart), "brushlabels": ["heart"]}
    box = {  # as Label Studio's documentation shows a rectangle: no original_width, original_height
        "id": "b",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "value": {
            "x": 25.0,
            "y": 12.5,
            "width": 50.0,
            "height": 50.0,
            "rotation": 0,
            "rectanglelabels": ["lung"],
        },
    }
    choice = {
        "id": "q",
        "type": "choices",
        "from_name": "finding",
        "to_name": "image",
        "value": {"choices": ["normal"]},
    }
    return [
        ls_task(
            "/data/upload/4/8f1b2c3d-case1.png", ls_annotation(lung, ls_result("brushlabels", brush, 32, 48))
        ),
        ls_task("/data/upload/4/0c9d8e7f-case2.png", ls_annotation(box), task_id=2),
        ls_task(
            "/data/upload/4/11aa22bb-case3.png",
            ls_annotation(choice),
            task_id=3,
        ),
    ]


def test_a_label_studio_export_becomes_the_masks_it_draws(
    client: TestClient, auth: dict[str, str], chest: tuple[str, dict[str, str]]
) -> None:
    dataset_id, samples = chest
    heart = np.zeros((32, 48), bool)
    heart[10:20, 15:30] = True
    heart[14, 20] = False  # a hole: the lung shows through
    response = _post(
        client, dataset_id, auth, {"project-4-at-2026-12-06.json": json.dumps(_label_studio(heart)).encode()}
    )
    assert response.status_code == 201, response.text
    batch = response.json()
    report = batch["report"]
    assert report["format"] == "label-studio" and report["accepted"] == 3
    assert report["export_annotators"] == ["reader@example.org"] and report["export_skipped"] == {
        "choices": 1
    }
    assert {f["file"]: f["sample"] for f in report["files"]} == {n: n for n in samples}

    def stored(name: str) -> np.ndarray:
        url = f"/v1/datasets/{dataset_id}/annotation-batches/{batch['id']}/masks/{samples[name]}"
        return np.asarray(Image.open(io.BytesIO(client.get(url, headers=auth).content)))

    lung = [c for x, y in LS_LUNG for c in (x * 48 / 100, y * 32 / 100)]
    expected = np.where(coco_mask.decode(coco_mask.frPyObjects([lung], 32, 48))[:, :, 0] == 1, 1, 0)
    expected[heart] = 2  # the brush after the polygon: on top
    np.testing.assert_array_equal(stored("case1.png"), expected)
    box = coco_mask.decode(coco_mask.frPyObjects([[12.0, 4.0, 36.0, 4.0, 36.0, 20.0, 12.0, 20.0]], 32, 48))
    np.testing.assert_array_equal(stored("case2.png"), box[:, :, 0])
    np.testing.assert_array_equal(stored("case3.png"), np.zeros((20, 20)))  # the sample's size


def _bad_label_studio(change: str) -> bytes:
    tasks = _label_studio(np.ones((32, 48), bool))
    first = tasks[0]["annotations"][0]["result"]
    if change == "label":
        first[0]["value"]["polygonlabels"] = ["tumour"]
    elif change == "rle":
        first[1]["value"]["rle"] = first[1]["value"]["rle"][:9]  # the header and a little of a chunk
    elif change == "rle size":
        first[1]["value"]["rle"] = BRUSH_WHITE  # a 5x3 image's
    else:  # the export says case1 is 40x32, the uploaded image is 48x32
        first[:] = [ls_result("polygonlabels", {"points": LS_LUNG, "polygonlabels": ["lung"]}, 32, 40)]
    return json.dumps(tasks).encode()


@pytest.mark.parametrize(
    ("entries", "named", "reason"),
    [
        (
            {"export.json": _bad_label_studio("label")},
            "tasks[0].annotations[0].result[0]",
            "label 'tumour' is not a class of the label map (lung, heart)",
        ),
        (
            {"export.json": _bad_label_studio("rle")},
            "tasks[0].annotations[0].result[1]",
            "ends inside a chunk",
        ),
        (
            {"export.json": _bad_label_studio("rle size")},
            "tasks[0].annotations[0].result[1]",
            "holds 60 values; a 48x32 RGBA image holds 6144",
        ),
        (
            {"export.json": _bad_label_studio("size")},
            "case1.png",
            "mask size 40x32 differs from image case1.png",
        ),
        ({"export.json": b"[1, 2]"}, "document", "nor a Label Studio JSON export"),
    ],
    ids=["unknown label", "undecodable rle", "rle of another size", "image of another size", "not tasks"],
)
def test_a_bad_label_studio_export_stores_nothing_and_names_the_entry(
    client: TestClient,
    auth: dict[str, str],
    chest: tuple[str, dict[str, str]],
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
    entries: dict[str, bytes],
    named: str,
    reason: str,
) -> None:
    _refused(client, auth, chest[0], store, db_session_factory, entries, named, reason)
