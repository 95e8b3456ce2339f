"""NIfTI volumes over HTTP: the service takes 2D images only so far, so a volume is refused by name with
the engine commands that take it (image uploads, masks, segment and segment-batch), nothing stored."""

from __future__ import annotations

import gzip

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Sample
from app.storage import ObjectStore
from tests.api.conftest import Finished, assert_problem, count_rows, files_part, image_png, upload_images

pytestmark = pytest.mark.integration

VOLUME = gzip.compress(b"\x5c\x01\x00\x00" + bytes(344))  # the start of a NIfTI-1 header, gzipped


def test_a_volume_upload_is_refused_with_the_commands_that_take_it(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
) -> None:
    sent = {"a.png": image_png(16, 16), "case_001.nii.gz": VOLUME}
    body = assert_problem(upload_images(client, dataset_id, auth, sent), 422, "case_001.nii.gz")
    [problem] = body["invalid_files"]
    assert problem["file"] == "case_001.nii.gz" and "gtcorrect train" in problem["reason"]
    assert count_rows(db_session_factory, Sample) == 0 and list(store.list()) == []


def test_segmenting_a_volume_names_the_command_that_does(
    client: TestClient, auth: dict[str, str], finished: Finished
) -> None:
    url = f"/v1/models/{finished.model_id}"
    one = client.post(f"{url}/segment", files=files_part({"case_001.nii.gz": VOLUME}, "file"), headers=auth)
    body = assert_problem(one, 422, "case_001.nii.gz")
    assert "gtcorrect predict" in body["invalid_files"][0]["reason"]
    sent = {"a.png": image_png(16, 16), "case_001.nii": VOLUME}
    many = client.post(f"{url}/segment-batch", files=files_part(sent), headers=auth)
    body = assert_problem(many, 422, "case_001.nii")
    assert [f["file"] for f in body["invalid_files"]] == ["case_001.nii"]
