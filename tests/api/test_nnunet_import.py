"""Importing an nnU-Net v2 raw dataset folder over HTTP: the folder as nnU-Net documents it becomes a
dataset, its samples and one batch of its labels, pixel for pixel; our own nnU-Net export comes back as the
same masks; a bad archive stores nothing and names its entries."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Annotation, AnnotationBatch, Dataset, Sample
from app.main import create_app
from app.settings import Settings
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
from tests.gtcorrect.test_nnunet_import import ROOT, nnunet_folder
from tests.support.volumes import nifti_bytes, volume

pytestmark = pytest.mark.integration
URL = "/v1/datasets/import/nnunet"


def _import(
    client: TestClient, auth: dict[str, str], archive: bytes, file_name: str = "dataset.zip", **form: str
) -> Any:
    return client.post(URL, data=form, files=files_part({file_name: archive}, "file"), headers=auth)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _stored(client: TestClient, auth: dict[str, str], dataset_id: str, batch_id: str) -> dict[str, Any]:
    """file name -> (image, mask) as the API serves them."""
    base = f"/v1/datasets/{dataset_id}"
    samples = client.get(f"{base}/samples", params={"limit": 1000}, headers=auth).json()["items"]
    return {
        s["file_name"]: (
            _png(client.get(f"{base}/samples/{s['id']}/image", headers=auth).content),
            _png(client.get(f"{base}/annotation-batches/{batch_id}/masks/{s['id']}", headers=auth).content),
        )
        for s in samples
    }


@pytest.mark.parametrize(
    ("channels", "rgb_in_one"),
    [(1, False), (3, False), (3, True)],
    ids=["grey", "three grey channel files", "RGB in one file"],
)
def test_a_documented_folder_becomes_a_dataset_with_its_images_and_labels(
    client: TestClient, auth: dict[str, str], channels: int, rgb_in_one: bool
) -> None:
    entries, images, labels = nnunet_folder(channels=channels, rgb_in_one=rgb_in_one, seed=channels)
    response = _import(client, auth, zip_bytes(entries))
    assert response.status_code == 201, response.text
    body = response.json()
    dataset = body["dataset"]
    assert response.headers["location"] == f"/v1/datasets/{dataset['id']}"
    assert dataset["name"] == ROOT and dataset["sample_count"] == 3
    assert dataset["label_map"] == {"0": "background", "1": "Anterior", "2": "Posterior"}
    assert (body["samples"], body["masks"]) == (3, 3)
    assert body["test_images_left_out"] == (1 if rgb_in_one else channels) and body["ignored_files"] == []

    stored = _stored(client, auth, dataset["id"], body["batch_id"])
    assert sorted(stored) == [f"{case}.png" for case in sorted(images)]
    for case, image in images.items():
        got_image, got_mask = stored[f"{case}.png"]
        np.testing.assert_array_equal(got_image, image)
        np.testing.assert_array_equal(got_mask, labels[case])
    batch = client.get(f"/v1/datasets/{dataset['id']}/annotation-batches/{body['batch_id']}", headers=auth)
    batch_body = batch.json()
    assert (batch_body["annotator"], batch_body["source"]) == ("nnU-Net labels", "nnU-Net v2 raw import")
    assert batch_body["status"] == "accepted" and batch_body["report"]["format"] == "nnunet"
    files = {f["file"]: f["sample"] for f in batch_body["report"]["files"]}
    assert files == {f"{ROOT}/labelsTr/{case}.png": f"{case}.png" for case in images}


def test_the_name_comes_from_the_form_then_dataset_json_then_the_archive(
    client: TestClient, auth: dict[str, str]
) -> None:
    entries = nnunet_folder(root="", meta={"name": "Hippocampus"})[0]
    named = _import(client, auth, zip_bytes(entries), file_name="hippo.zip", annotator="MSD raters")
    assert named.status_code == 201, named.text
    assert named.json()["dataset"]["name"] == "Hippocampus"
    batches = client.get(f"/v1/datasets/{named.json()['dataset']['id']}/annotation-batches", headers=auth)
    assert batches.json()["items"][0]["annotator"] == "MSD raters"
    chosen = _import(client, auth, zip_bytes(entries), file_name="hippo.zip", name="hippocampus-round-2")
    assert chosen.status_code == 201 and chosen.json()["dataset"]["name"] == "hippocampus-round-2"
    unnamed = _import(client, auth, zip_bytes(nnunet_folder(root="")[0]), file_name="hippo.zip")
    assert unnamed.status_code == 201 and unnamed.json()["dataset"]["name"] == "hippo"
    taken = _import(client, auth, zip_bytes(nnunet_folder(root="")[0]), file_name="hippo.zip")
    assert taken.status_code == 409


def test_our_nnunet_export_imports_back_as_the_same_masks(
    client: TestClient, auth: dict[str, str], dataset_id: str
) -> None:
    images = {
        "a.png": image_png(30, 50, 1),
        "b.jpg.png": image_png(24, 40, 2),
        "c d.png": image_png(16, 16, 3),
    }
    upload = client.post(f"/v1/datasets/{dataset_id}/images", files=files_part(images), headers=auth)
    assert upload.status_code == 201, upload.text
    masks = {"a.png": mask_png(30, 50), "b.jpg.png": mask_png(24, 40, 255), "c d.png": mask_png(16, 16, 0)}
    batches = f"/v1/datasets/{dataset_id}/annotation-batches"
    batch = client.post(batches, data={"annotator": "x"}, files=files_part(masks), headers=auth).json()
    exported = client.get(f"{batches}/{batch['id']}/export", params={"format": "nnunet"}, headers=auth)
    assert exported.status_code == 200, exported.text

    response = _import(client, auth, exported.content, file_name="nnunet.zip")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["dataset"]["name"] == "Dataset501_Polyps" and body["samples"] == 3
    assert body["dataset"]["label_map"] == {"0": "background", "1": "polyp"}
    assert body["ignored_files"] == ["Dataset501_Polyps/cases.csv"]
    archive = zipfile.ZipFile(io.BytesIO(exported.content))
    mapping = archive.read("Dataset501_Polyps/cases.csv").decode()
    cases = {r["file_name"]: r["case"] for r in csv.DictReader(io.StringIO(mapping))}
    original = _stored(client, auth, dataset_id, batch["id"])
    imported = _stored(client, auth, body["dataset"]["id"], body["batch_id"])
    assert sorted(imported) == sorted(f"{case}.png" for case in cases.values())
    for file_name, (image, mask) in original.items():
        got_image, got_mask = imported[f"{cases[file_name]}.png"]
        np.testing.assert_array_equal(got_image, image)
        np.testing.assert_array_equal(got_mask, mask)


def _change(**changes: bytes | None) -> Callable[[dict[str, bytes]], None]:
    """Entries (relative to the dataset folder) replaced, added, or removed (None)."""

    def apply(entries: dict[str, bytes]) -> None:
        for name, data in changes.items():
            if data is None:
                entries.pop(f"{ROOT}/{name}")
            else:
                entries[f"{ROOT}/{name}"] = data

    return apply


def _meta(**fields: Any) -> bytes:
    base = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2}}
    return json.dumps({**base, "numTraining": 3, "file_ending": ".png", **fields}).encode()


H0, W0 = 20, 30  # the size of case hippocampus_000 in nnunet_folder


@pytest.mark.parametrize(
    ("change", "named", "reason"),
    [
        (_change(**{"labelsTr/hippocampus_001.png": None}),
         "imagesTr/hippocampus_001_0000.png", f"no label {ROOT}/labelsTr/hippocampus_001.png"),
        (_change(**{"imagesTr/hippocampus_002_0000.png": None}), "labelsTr/hippocampus_002.png",
         f"no image {ROOT}/imagesTr/hippocampus_002_0000.png"),
        (_change(**{"dataset.json": _meta(labels={"background": 0, "Anterior": 1, "Posterior": 3})}),
         "dataset.json", "labels must be consecutive from 0"),
        (_change(**{"dataset.json": _meta(file_ending=".nrrd")}), "dataset.json",
         "this 3D format is not read"),
        (_change(**{"dataset.json": _meta(channel_names={"0": "T2", "1": "ADC"}),
                    "imagesTr/hippocampus_000_0001.png": png_bytes(np.zeros((H0, W0), np.uint8))}),
         "imagesTr/hippocampus_000_0000.png", "has 2 channels"),
        (_change(**{"labelsTr/hippocampus_000.png": png_bytes(np.full((H0, W0), 3, np.uint8))}),
         "labelsTr/hippocampus_000.png", "lie outside the label map 0..2"),
        (_change(**{"labelsTr/hippocampus_000.png": png_bytes(np.zeros((H0, W0 + 1), np.uint8))}),
         "labelsTr/hippocampus_000.png", "differs from image hippocampus_000.png"),
        (_change(**{"imagesTr/hippocampus_001_0000.png": b"\x89PNG not an image"}),
         "imagesTr/hippocampus_001_0000.png", "not a readable image"),
        (_change(**{"imagesTr/hippocampus_777_0000.png": png_bytes(np.zeros((H0, W0), np.uint8)),
                    "labelsTr/hippocampus_777.png": png_bytes(np.zeros((H0, W0), np.uint8)),
                    "imagesTr/hippocampus_778_0000.png": png_bytes(np.zeros((H0, W0), np.uint8)),
                    "labelsTr/hippocampus_778.png": png_bytes(np.zeros((H0, W0), np.uint8)),
                    "dataset.json": _meta(numTraining=5)}),
         "imagesTr/hippocampus_778_0000.png", f"the same image as {ROOT}/imagesTr/hippocampus_777_0000.png"),
    ],
    ids=["missing label", "missing image", "labels with a gap", "nrrd", "two channels",
         "label outside the label map", "label of another size", "unreadable image", "one image twice"],
)  # fmt: skip
def test_a_bad_archive_stores_nothing_and_names_the_entry(
    client: TestClient,
    auth: dict[str, str],
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
    change: Callable[[dict[str, bytes]], None],
    named: str,
    reason: str,
) -> None:
    entries = nnunet_folder()[0]
    change(entries)
    body = assert_problem(_import(client, auth, zip_bytes(entries)), 422, f"{ROOT}/{named}")
    assert reason in next(f["reason"] for f in body["invalid_files"] if f["file"] == f"{ROOT}/{named}")
    assert "nothing was stored" in body["detail"]
    for table in (Dataset, Sample, AnnotationBatch, Annotation):
        assert count_rows(db_session_factory, table) == 0, table
    assert list(store.list()) == []


def test_an_upload_that_is_no_zip_or_no_dataset_is_refused(client: TestClient, auth: dict[str, str]) -> None:
    entries = nnunet_folder()[0]
    loose = _import(client, auth, entries[f"{ROOT}/dataset.json"], file_name="dataset.json")
    assert "as one zip archive" in assert_problem(loose, 422, "dataset.json")["invalid_files"][0]["reason"]
    masks = zip_bytes({"masks/a.png": mask_png(4, 4)})
    assert (
        "holds no dataset.json" in assert_problem(_import(client, auth, masks), 422, "dataset.json")["detail"]
    )


def _tif(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def test_a_2d_tif_dataset_imports_and_a_3d_stack_is_refused(
    client: TestClient, auth: dict[str, str], db_session_factory: sessionmaker[Session]
) -> None:
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (12, 16), dtype=np.uint8)
    label = rng.integers(0, 3, (12, 16), dtype=np.uint8)
    entries = {
        "cells/dataset.json": _meta(numTraining=1, file_ending=".tif"),
        "cells/imagesTr/cell1_0000.tif": _tif(image),
        "cells/labelsTr/cell1.tif": _tif(label),
    }
    imported = _import(client, auth, zip_bytes(entries))
    assert imported.status_code == 201, imported.text
    body = imported.json()
    ((got_image, got_mask),) = _stored(client, auth, body["dataset"]["id"], body["batch_id"]).values()
    np.testing.assert_array_equal(got_image, image)
    np.testing.assert_array_equal(got_mask, label)

    entries["cells/labelsTr/cell1.tif"] = _tif(np.stack([label] * 5))  # a 3D stack of 5 planes
    refused = _import(client, auth, zip_bytes(entries), name="cells-3d")
    reason = assert_problem(refused, 422, "cells/labelsTr/cell1.tif")["invalid_files"][0]["reason"]
    assert reason.startswith("a TIFF of 5 pages, a 3D stack; this 3D format is not read")
    assert count_rows(db_session_factory, Dataset) == 1


@pytest.mark.parametrize("channels", [1, 3], ids=["one file (the image upload's check)", "three combined"])
def test_the_upload_limits_hold_for_every_entry(
    settings: Settings,
    auth: dict[str, str],
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
    channels: int,
) -> None:
    entries = nnunet_folder(channels=channels)[0]  # cases of 30x20, 28x23 and 26x26 pixels
    tight = settings.model_copy(update={"max_image_pixels": 650, "max_zip_entries": len(entries)})
    with TestClient(create_app(tight)) as client:
        body = assert_problem(_import(client, auth, zip_bytes(entries)), 422)
        named = {f["file"]: f["reason"] for f in body["invalid_files"]}
        expected = {f"{ROOT}/imagesTr/hippocampus_002_{c:04d}.png" for c in range(channels)}
        assert set(named) == expected and all(
            "26x26 pixels exceeds max_pixels=650" in r for r in named.values()
        )
        entries[f"{ROOT}/README.md"] = b"one entry too many"
        crowded = assert_problem(_import(client, auth, zip_bytes(entries)), 422, "dataset.zip")
        assert "above the limit of" in crowded["detail"]
    for table in (Dataset, Sample, AnnotationBatch, Annotation):
        assert count_rows(db_session_factory, table) == 0, table
    assert list(store.list()) == []


def test_a_nifti_dataset_imports_as_volumes_with_their_label_volumes(
    client: TestClient, auth: dict[str, str], store: ObjectStore
) -> None:
    """Dataset004_Hippocampus as nnU-Net ships it: one NIfTI channel per case; each case a volume whose
    slices are the samples and whose label volume gives their masks."""
    entries: dict[str, bytes] = {}
    cases = {}
    for k in range(2):
        image, labels = volume(k, (4, 20, 16))
        cases[f"hippocampus_{k:03d}"] = labels
        entries[f"{ROOT}/imagesTr/hippocampus_{k:03d}_0000.nii.gz"] = nifti_bytes(image)
        entries[f"{ROOT}/labelsTr/hippocampus_{k:03d}.nii.gz"] = nifti_bytes(labels)
    entries[f"{ROOT}/imagesTs/hippocampus_900_0000.nii.gz"] = nifti_bytes(volume(9, (4, 20, 16))[0])
    meta = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    entries[f"{ROOT}/dataset.json"] = json.dumps(meta).encode()
    response = _import(client, auth, zip_bytes(entries))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["samples"], body["masks"], body["test_images_left_out"]) == (8, 8, 1)
    dataset_id = body["dataset"]["id"]
    listed = client.get(f"/v1/datasets/{dataset_id}/volumes", headers=auth).json()["items"]
    assert [v["name"] for v in listed] == ["hippocampus_000", "hippocampus_001"]
    stored = _stored(client, auth, dataset_id, body["batch_id"])
    for case, labels in cases.items():
        for k in range(4):
            np.testing.assert_array_equal(stored[f"{case}_s{k:03d}.png"][1], labels[k])
    two = {
        **entries,
        f"{ROOT}/imagesTr/hippocampus_000_0001.nii.gz": entries[
            f"{ROOT}/imagesTr/hippocampus_000_0000.nii.gz"
        ],
    }
    two[f"{ROOT}/dataset.json"] = json.dumps({**meta, "channel_names": {"0": "T1", "1": "T2"}}).encode()
    refused = assert_problem(
        _import(client, auth, zip_bytes(two)), 422, f"{ROOT}/imagesTr/hippocampus_000_0000.nii.gz"
    )
    assert "a volume case takes one (_0000)" in refused["detail"]
