"""Deleting jobs, models, batches and samples and renaming datasets, over HTTP on real Postgres and S3:
what goes is gone from the store too, and what something still depends on is refused with a 409 naming
it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.storage import ObjectStore
from tests.api.conftest import Finished, assert_problem, files_part, image_png, mask_png, queued_job

pytestmark = pytest.mark.integration


def _objects(store: ObjectStore, fragment: str) -> list[str]:
    return [key for key in store.list() if fragment in key]


def test_a_job_goes_after_its_model_and_takes_its_objects(
    client: TestClient, auth: dict[str, str], store: ObjectStore, finished: Finished
) -> None:
    job_url, model_url = f"/v1/jobs/{finished.job_id}", f"/v1/models/{finished.model_id}"
    refused = assert_problem(client.delete(job_url, headers=auth), 409)
    assert finished.model_id in refused["detail"] and "delete the model first" in refused["detail"]
    assert _objects(store, finished.job_id) and _objects(store, finished.model_id)
    assert client.delete(model_url, headers=auth).status_code == 204
    assert_problem(client.get(model_url, headers=auth), 404)
    assert _objects(store, finished.model_id) == []
    assert client.delete(job_url, headers=auth).status_code == 204
    assert_problem(client.get(job_url, headers=auth), 404)
    assert _objects(store, finished.job_id) == []  # corrected masks, plots, checkpoints
    assert_problem(client.delete(job_url, headers=auth), 404)


def test_a_batch_or_sample_a_job_trained_on_is_refused_until_the_job_goes(
    client: TestClient, auth: dict[str, str], dataset_id: str, store: ObjectStore, finished: Finished
) -> None:
    batches = f"/v1/datasets/{dataset_id}/annotation-batches"
    (batch,) = client.get(batches, headers=auth).json()["items"]
    sample = finished.samples["a.png"]
    for url in (f"{batches}/{batch['id']}", f"/v1/datasets/{dataset_id}/samples/{sample}"):
        refused = assert_problem(client.delete(url, headers=auth), 409)
        assert finished.job_id in refused["detail"] and refused["job_ids"] == [finished.job_id]
    client.delete(f"/v1/models/{finished.model_id}", headers=auth)
    client.delete(f"/v1/jobs/{finished.job_id}", headers=auth)
    mask_keys = [f["annotation_id"] for f in batch["report"]["files"]]
    assert all(_objects(store, k) for k in mask_keys)
    assert client.delete(f"/v1/datasets/{dataset_id}/samples/{sample}", headers=auth).status_code == 204
    assert_problem(client.get(f"/v1/datasets/{dataset_id}/samples/{sample}", headers=auth), 404)
    assert _objects(store, sample) == []  # the image
    assert client.delete(f"{batches}/{batch['id']}", headers=auth).status_code == 204
    assert client.get(batches, headers=auth).json()["items"] == []
    assert not any(_objects(store, k) for k in mask_keys)  # every mask of the batch
    assert client.get(f"/v1/datasets/{dataset_id}", headers=auth).json()["sample_count"] == 2


def test_an_unfinished_job_is_cancelled_before_it_is_deleted(
    client: TestClient, auth: dict[str, str], dataset_id: str
) -> None:
    job_id, _ = queued_job(client, auth, dataset_id)
    refused = assert_problem(client.delete(f"/v1/jobs/{job_id}", headers=auth), 409)
    assert "cancel it first" in refused["detail"]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).status_code == 200
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth).status_code == 204
    assert client.get("/v1/jobs", headers=auth).json()["total"] == 0


def test_a_dataset_is_renamed_under_the_rules_of_a_new_name(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], dataset_id: str
) -> None:
    url = f"/v1/datasets/{dataset_id}"
    renamed = client.patch(url, json={"name": "polyps-round-2"}, headers=auth)
    assert renamed.status_code == 200 and renamed.json()["name"] == "polyps-round-2"
    assert client.get(url, headers=auth).json()["name"] == "polyps-round-2"
    client.post("/v1/datasets", json={"name": "taken"}, headers=auth)
    assert (
        "already exists"
        in assert_problem(client.patch(url, json={"name": "taken"}, headers=auth), 409)["detail"]
    )
    assert_problem(client.patch(url, json={"name": ""}, headers=auth), 422)
    assert_problem(client.patch(url, json={"nmae": "typo"}, headers=auth), 422)  # unknown field, not ignored
    assert_problem(client.patch(url, json={"name": "x"}, headers=other_auth), 404)


def test_deleting_another_projects_things_is_a_404(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], dataset_id: str
) -> None:
    client.post(
        f"/v1/datasets/{dataset_id}/images", files=files_part({"a.png": image_png(8, 8)}), headers=auth
    )
    batch = client.post(
        f"/v1/datasets/{dataset_id}/annotation-batches",
        data={"annotator": "x"},
        files=files_part({"a.png": mask_png(8, 8)}),
        headers=auth,
    ).json()
    assert_problem(
        client.delete(f"/v1/datasets/{dataset_id}/annotation-batches/{batch['id']}", headers=other_auth), 404
    )
    assert (
        client.get(f"/v1/datasets/{dataset_id}/annotation-batches/{batch['id']}", headers=auth).status_code
        == 200
    )
