"""NIfTI volumes over HTTP: image volumes stored as sent and cut into slice samples, label volumes as their
masks, a job's verdict per volume and its masks as a label volume in the image's space, a volume
segmented; bad volumes refused naming the file, nothing stored."""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Annotation, JobStatus, Sample, TrainingJob, Volume
from app.db.session import session_scope
from app.services.results import CorrectedRecord, JobResults, SampleVerdict, model_id_for_job, record_results
from app.storage import ObjectStore, keys
from gtcorrect import volumes
from gtcorrect.data import mask_to_png
from gtcorrect.types import LabelMap
from tests.api.conftest import (
    Finished,
    assert_problem,
    count_rows,
    files_part,
    image_png,
    tiny_bundle,
    upload_images,
    upload_masks,
    zip_bytes,
)
from tests.support.volumes import AFFINE, nifti_bytes, volume

pytestmark = pytest.mark.integration

LABELS = {"0": "background", "1": "anterior", "2": "posterior"}
SHAPE = (5, 20, 16)  # 5 slices of 20 x 16


@pytest.fixture
def volume_dataset(client: TestClient, auth: dict[str, str]) -> str:
    response = client.post("/v1/datasets", json={"name": "hippocampus", "label_map": LABELS}, headers=auth)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _grey(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def _upload_two(client: TestClient, dataset: str, auth: dict[str, str]) -> dict[str, Any]:
    """case_a.nii.gz as a file, case_b.nii (uncompressed) inside a zip."""
    sent = {
        "case_a.nii.gz": nifti_bytes(volume(0, SHAPE)[0]),
        "more.zip": zip_bytes({"volumes/case_b.nii": nifti_bytes(volume(1, SHAPE)[0], gz=False)}),
    }
    response = upload_images(client, dataset, auth, sent)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_volumes_become_slice_samples_and_label_volumes_their_masks(
    client: TestClient,
    auth: dict[str, str],
    volume_dataset: str,
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
) -> None:
    body = _upload_two(client, volume_dataset, auth)
    assert body["created"] == 2
    assert {f["file"]: f["slices"] for f in body["files"]} == {"case_a.nii.gz": 5, "case_b.nii": 5}
    listed = client.get(f"/v1/datasets/{volume_dataset}/volumes", headers=auth).json()
    assert [v["name"] for v in listed["items"]] == ["case_a", "case_b"]
    case_a = listed["items"][0]
    assert case_a["shape"] == list(SHAPE) and case_a["slices"] == 5
    np.testing.assert_allclose(case_a["spacing"], [1.2, 0.8, 2.5])
    samples = client.get(f"/v1/datasets/{volume_dataset}/samples?limit=50", headers=auth).json()["items"]
    assert [s["file_name"] for s in samples[:3]] == ["case_a_s000.png", "case_a_s001.png", "case_a_s002.png"]
    assert {(s["width"], s["height"], s["channels"]) for s in samples} == {(16, 20, 1)}
    assert [s["slice_index"] for s in samples if s["volume_id"] == case_a["id"]] == [0, 1, 2, 3, 4]
    # One grey scale per volume: the stored slice is the windowed volume's slice.
    grey = volumes.window(volume(0, SHAPE)[0])
    stored = client.get(f"/v1/datasets/{volume_dataset}/samples/{samples[2]['id']}/image", headers=auth)
    np.testing.assert_array_equal(_grey(stored.content), grey[2])
    # The file as sent is kept (its header: affine, spacing).
    with session_scope(db_session_factory) as session:
        key = session.scalars(select(Volume.object_key).where(Volume.name == "case_a")).one()
    assert store.get(key) == nifti_bytes(volume(0, SHAPE)[0])

    again = upload_images(client, volume_dataset, auth, {"copy.nii.gz": nifti_bytes(volume(0, SHAPE)[0])})
    assert again.json()["files"][0]["status"] == "duplicate"

    labels = {name: volume(i, SHAPE)[1] for i, name in enumerate(("case_a", "case_b"))}
    masks = {"labels.zip": zip_bytes({f"{name}.nii.gz": nifti_bytes(data) for name, data in labels.items()})}
    batch = upload_masks(client, volume_dataset, auth, masks, "reader-1")
    assert batch.status_code == 201, batch.text
    report = batch.json()["report"]
    assert report["format"] == "nifti" and report["accepted"] == 10
    assert report["volumes"] == ["case_a.nii.gz", "case_b.nii.gz"]
    with session_scope(db_session_factory) as session:
        rows = session.execute(select(Sample, Annotation).join(Annotation, Annotation.sample_id == Sample.id))
        stored_masks = {s.file_name: store.get(a.object_key) for s, a in rows}
    for name, data in labels.items():
        for k in range(SHAPE[0]):
            np.testing.assert_array_equal(_grey(stored_masks[f"{name}_s{k:03d}.png"]), data[k])


def test_bad_volumes_are_refused_naming_each_and_nothing_is_stored(
    client: TestClient,
    auth: dict[str, str],
    volume_dataset: str,
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
) -> None:
    image = nifti_bytes(volume(0, SHAPE)[0])
    sent = {
        "ok.nii.gz": image,
        "cine.nii.gz": nifti_bytes(np.zeros((4, 4, 4, 2), np.float32)),
        "cut.nii.gz": image[: len(image) // 2],
        "ok.nii": nifti_bytes(volume(1, SHAPE)[0], gz=False),
        "a.png": image_png(16, 16),
    }
    body = assert_problem(
        upload_images(client, volume_dataset, auth, sent), 422, "cine.nii.gz", "cut.nii.gz", "ok.nii"
    )
    reasons = {f["file"]: f["reason"] for f in body["invalid_files"]}
    assert "3 dimensions" in reasons["cine.nii.gz"] and "not a readable NIfTI" in reasons["cut.nii.gz"]
    assert reasons["ok.nii"] == "another volume of this upload has the same name"
    assert count_rows(db_session_factory, Volume) == 0 and list(store.list()) == []

    _upload_two(client, volume_dataset, auth)
    objects = sorted(store.list())
    labels = volume(0, SHAPE)[1]
    wrong_values = labels.copy()
    wrong_values[0, 0, 0] = 7
    masks = {
        "case_a.nii.gz": nifti_bytes(wrong_values),
        "case_b.nii.gz": nifti_bytes(labels[:4]),
        "case_z.nii.gz": nifti_bytes(labels),
    }
    body = assert_problem(upload_masks(client, volume_dataset, auth, masks, "r"), 422, *masks)
    reasons = {f["file"]: f["reason"] for f in body["invalid_files"]}
    assert "[7] are outside the label map" in reasons["case_a.nii.gz"]
    assert (
        "label volume of shape [4, 20, 16] for image volume case_b.nii of shape [5, 20, 16]"
        in reasons["case_b.nii.gz"]
    )
    assert reasons["case_z.nii.gz"] == "no image volume of this name in the dataset"
    assert count_rows(db_session_factory, Annotation) == 0 and sorted(store.list()) == objects


def _trained(
    db_session_factory: sessionmaker[Session],
    store: ObjectStore,
    client: TestClient,
    auth: dict[str, str],
    dataset: str,
) -> tuple[str, dict[str, np.ndarray]]:
    """A job on both volumes as its worker would store it: slice 2 of case_a flagged and corrected,
    slice 4 of case_b flagged without a correction."""
    _upload_two(client, dataset, auth)
    labels = {name: volume(i, SHAPE)[1] for i, name in enumerate(("case_a", "case_b"))}
    masks = {f"{name}.nii.gz": nifti_bytes(data) for name, data in labels.items()}
    assert upload_masks(client, dataset, auth, masks, "reader-1").status_code == 201
    job = client.post("/v1/jobs", json={"dataset_id": dataset}, headers=auth)
    assert job.status_code == 202, job.text
    job_id = uuid.UUID(job.json()["id"])
    fix = np.zeros(SHAPE[1:], np.uint8)
    fix[4:9, 3:7] = 2
    with session_scope(db_session_factory) as session:
        row = session.get_one(TrainingJob, job_id)
        row.status, row.attempt, project = JobStatus.running, 1, row.project_id
        slices = session.execute(
            select(Sample, Annotation).join(Annotation, Annotation.sample_id == Sample.id)
        )
        pairs = {s.file_name: (s.id, a.id) for s, a in slices}
    doubt = {"case_a_s002.png": 0.2, "case_b_s004.png": 0.3}
    verdicts = [
        SampleVerdict(sid, aid, doubt.get(name, 0.9), name in doubt, 0.5, 1)
        for name, (sid, aid) in pairs.items()
    ]
    key = keys.corrected(project, job_id, pairs["case_a_s002.png"][0])
    store.put(key, mask_to_png(fix, LabelMap(tuple(LABELS.values()))), "image/png")
    weights = keys.model(project, model_id_for_job(job_id))
    store.put(weights, tiny_bundle().to_bytes())
    with session_scope(db_session_factory) as session:
        record_results(
            session,
            job_id,
            1,
            JobResults(
                verdicts,
                [CorrectedRecord(pairs["case_a_s002.png"][0], key, 0.1, 20)],
                weights,
                {"dice": 0.5},
                {"phase": "done"},
            ),
        )
    labels["case_a"][2] = fix
    return str(job_id), labels


def test_a_jobs_verdict_per_volume_and_its_masks_as_a_label_volume(
    client: TestClient,
    auth: dict[str, str],
    volume_dataset: str,
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
) -> None:
    job_id, expected = _trained(db_session_factory, store, client, auth, volume_dataset)
    verdicts = client.get(f"/v1/jobs/{job_id}/volumes", headers=auth).json()
    assert verdicts["total"] == 2
    first, second = verdicts["items"]
    assert (first["volume"], first["flagged_slices"], first["corrected_slices"]) == ("case_a", [2], [2])
    assert (second["volume"], second["flagged_slices"], second["corrected_slices"]) == ("case_b", [4], [])
    assert first["noise_probability"] == pytest.approx(0.8) and first["slices"] == 5
    for verdict in verdicts["items"]:
        response = client.get(f"/v1/jobs/{job_id}/volumes/{verdict['volume_id']}/masks.nii.gz", headers=auth)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/gzip"
        assert f'filename="{verdict["volume"]}.nii.gz"' in response.headers["content-disposition"]
        answer = volumes.read_volume_bytes(response.content)
        np.testing.assert_allclose(answer.affine, AFFINE)
        np.testing.assert_allclose(answer.header.get_zooms()[:3], [1.2, 0.8, 2.5])
        assert answer.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asarray(answer.dataobj), expected[verdict["volume"]])
    unknown = client.get(f"/v1/jobs/{job_id}/volumes/{uuid.uuid4()}/masks.nii.gz", headers=auth)
    assert unknown.status_code == 404
    # A slice goes with its volume; a volume a job trained on stays until the job is deleted.
    sample = client.get(f"/v1/datasets/{volume_dataset}/samples?limit=1", headers=auth).json()["items"][0]
    gone = client.delete(f"/v1/datasets/{volume_dataset}/samples/{sample['id']}", headers=auth)
    assert gone.status_code == 409 and "delete the volume" in gone.json()["detail"]
    trained = client.delete(f"/v1/datasets/{volume_dataset}/volumes/{first['volume_id']}", headers=auth)
    assert trained.status_code == 409 and job_id in trained.json()["detail"]


def test_a_volume_is_deleted_with_its_slices_masks_and_file(
    client: TestClient,
    auth: dict[str, str],
    volume_dataset: str,
    store: ObjectStore,
    db_session_factory: sessionmaker[Session],
) -> None:
    body = _upload_two(client, volume_dataset, auth)
    masks = {"case_a.nii.gz": nifti_bytes(volume(0, SHAPE)[1])}
    assert upload_masks(client, volume_dataset, auth, masks, "r").status_code == 201
    case_a = next(f["id"] for f in body["files"] if f["file"] == "case_a.nii.gz")
    before = len(list(store.list()))
    assert client.delete(f"/v1/datasets/{volume_dataset}/volumes/{case_a}", headers=auth).status_code == 204
    assert len(list(store.list())) == before - 1 - 5 - 5  # the file, 5 slices, 5 masks
    assert count_rows(db_session_factory, Sample) == 5 and count_rows(db_session_factory, Annotation) == 0
    assert client.get(f"/v1/datasets/{volume_dataset}/volumes/{case_a}", headers=auth).status_code == 404


def test_a_volume_is_segmented_into_a_label_volume_in_its_space(
    client: TestClient, auth: dict[str, str], finished: Finished
) -> None:
    url = f"/v1/models/{finished.model_id}"
    sent = nifti_bytes(volume(3, SHAPE)[0])
    answer = client.post(f"{url}/segment", files=files_part({"case_x.nii.gz": sent}, "file"), headers=auth)
    assert answer.status_code == 200, answer.text
    assert 'filename="case_x.nii.gz"' in answer.headers["content-disposition"]
    labels = volumes.read_volume_bytes(answer.content)
    assert labels.shape == SHAPE and labels.get_data_dtype() == np.uint8
    np.testing.assert_allclose(labels.affine, AFFINE)
    assert set(np.unique(np.asarray(labels.dataobj)).tolist()) <= {0, 1}
    # With flips, each slice is answered as a 2D request with flips answers that slice.
    flipped = client.post(
        f"{url}/segment",
        params={"flips": "true"},
        files=files_part({"case_x.nii.gz": sent}, "file"),
        headers=auth,
    )
    assert flipped.status_code == 200, flipped.text
    answered = np.asarray(volumes.read_volume_bytes(flipped.content).dataobj)
    image = volumes.read_volume_bytes(sent)
    cut = volumes.image_slices(volumes.Volume("case_x", np.asarray(image.dataobj), image))
    for k, grey in enumerate(cut):
        buffer = io.BytesIO()
        Image.fromarray(grey[:, :, 0]).save(buffer, format="PNG")
        png = client.post(
            f"{url}/segment",
            params={"flips": "true"},
            files=files_part({"s.png": buffer.getvalue()}, "file"),
            headers=auth,
        )
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png.content))) > 0, answered[k] > 0)
    as_json = client.post(
        f"{url}/segment?format=json", files=files_part({"case_x.nii.gz": sent}, "file"), headers=auth
    )
    assert as_json.status_code == 422 and "NIfTI label volume" in as_json.json()["detail"]
    broken = client.post(f"{url}/segment", files=files_part({"x.nii": b"not a volume"}, "file"), headers=auth)
    assert_problem(broken, 422, "x.nii")
    many = client.post(
        f"{url}/segment-batch",
        files=files_part({"a.png": image_png(16, 16), "case_x.nii.gz": sent}),
        headers=auth,
    )
    body = assert_problem(many, 422, "case_x.nii.gz")
    assert "POST /v1/models/{id}/segment" in body["invalid_files"][0]["reason"]
