"""DICOM over HTTP: images uploaded (multipart and zip) and stored as PNG, PNG masks matched to them,
DICOM masks and volumes refused with nothing stored, and segmentation answers named after the image."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Annotation, Sample
from app.storage import ObjectStore
from gtcorrect.data import read_image
from tests.api.conftest import (
    Finished,
    assert_problem,
    count_rows,
    files_part,
    mask_png,
    upload_images,
    upload_masks,
    zip_bytes,
)
from tests.support.dicom import dicom_bytes

pytestmark = pytest.mark.integration

# A 16-bit CT slice (Hounsfield units + 1024) with its window, and an RGB photograph.
CT = dicom_bytes(
    (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 4),
    RescaleSlope=1,
    RescaleIntercept=-1024,
    WindowCenter=40,
    WindowWidth=400,
)
PHOTO = dicom_bytes(np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8), photometric="RGB")


def test_dicom_images_are_stored_as_png_and_take_png_masks(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
) -> None:
    response = upload_images(
        client, dataset_id, auth, {"ct01.dcm": CT, "photos.zip": zip_bytes({"x/ct02.dcm": PHOTO})}
    )
    assert response.status_code == 201, response.text
    assert sorted(f["file"] for f in response.json()["files"]) == ["ct01.dcm", "ct02.dcm"]
    samples = {
        s["file_name"]: s
        for s in client.get(f"/v1/datasets/{dataset_id}/samples", headers=auth).json()["items"]
    }
    shapes = {name: (s["width"], s["height"], s["channels"]) for name, s in samples.items()}
    assert shapes == {"ct01.dcm": (32, 24, 1), "ct02.dcm": (28, 20, 3)}  # Columns x Rows, channels
    stored = client.get(f"/v1/datasets/{dataset_id}/samples/{samples['ct01.dcm']['id']}/image", headers=auth)
    assert stored.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(stored.content)))
    assert pixels.shape == (24, 32)  # Rows x Columns
    np.testing.assert_array_equal(pixels, read_image(CT)[:, :, 0])  # the windowed 8-bit image

    # A DICOM file as a mask is refused by name; PNG masks named like the images are matched by stem.
    body = assert_problem(
        upload_masks(client, dataset_id, auth, {"ct01.dcm": CT}, "radiologist-1"), 422, "ct01.dcm"
    )
    assert "DICOM SEG" in body["invalid_files"][0]["reason"]
    assert count_rows(db_session_factory, Annotation) == 0
    pngs = {"ct01.png": mask_png(24, 32), "CT02.png": mask_png(20, 28)}
    batch = upload_masks(client, dataset_id, auth, pngs, "radiologist-1")
    assert batch.status_code == 201, batch.text
    assert count_rows(db_session_factory, Annotation) == 2


def test_a_multi_frame_dicom_is_refused_and_nothing_stored(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
) -> None:
    cine = dicom_bytes(np.zeros((3, 16, 16), np.uint16), frames=3)
    body = assert_problem(
        upload_images(client, dataset_id, auth, {"ct01.dcm": CT, "cine.dcm": cine}), 422, "cine.dcm"
    )
    assert [f["file"] for f in body["invalid_files"]] == ["cine.dcm"]
    assert "as one NIfTI file (.nii.gz)" in body["invalid_files"][0]["reason"]
    assert count_rows(db_session_factory, Sample) == 0
    assert list(store.list()) == []


def test_segmenting_dicom_answers_png_masks_named_after_the_image(
    client: TestClient, auth: dict[str, str], finished: Finished
) -> None:
    url = f"/v1/models/{finished.model_id}"
    mask = client.post(f"{url}/segment", files=files_part({"ct01.dcm": CT}, "file"), headers=auth)
    assert mask.status_code == 200, mask.text
    assert mask.headers["content-type"] == "image/png"
    assert np.asarray(Image.open(io.BytesIO(mask.content))).shape == (24, 32)
    npy = client.post(
        f"{url}/segment", params={"format": "npy"}, files=files_part({"ct01.dcm": CT}, "file"), headers=auth
    )
    assert np.load(io.BytesIO(npy.content)).shape == (2, 24, 32)

    batch = client.post(
        f"{url}/segment-batch", files=files_part({"ct01.dcm": CT, "ct02.dcm": PHOTO}), headers=auth
    )
    assert batch.status_code == 200, batch.text
    archive = zipfile.ZipFile(io.BytesIO(batch.content))
    assert sorted(archive.namelist()) == ["ct01.png", "ct02.png", "predictions.json"]
    assert np.asarray(Image.open(io.BytesIO(archive.read("ct01.png")))).shape == (24, 32)
    assert np.asarray(Image.open(io.BytesIO(archive.read("ct02.png")))).shape == (20, 28)
