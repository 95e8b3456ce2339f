"""Review decisions, curated annotation versions and exports, over HTTP on real Postgres and S3.

The job is the ``finished`` fixture: three samples, a.png (clean probability 0.1) and b.jpg.png (0.3)
flagged with a proposed correction each, c.png (0.9) unflagged.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as coco_mask

from app.main import create_app
from app.settings import Settings
from tests.api.conftest import Finished, assert_problem, files_part

pytestmark = pytest.mark.integration


def _put(
    client: TestClient, auth: dict[str, str], f: Finished, name: str, decision: str, **kw: str
) -> object:
    url = f"/v1/jobs/{f.job_id}/decisions/{f.samples[name]}"
    return client.put(url, json={"decision": decision, **kw}, headers=auth)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_decisions_are_idempotent_keep_history_and_refuse_what_cannot_be(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], finished: Finished
) -> None:
    first = _put(client, auth, finished, "a.png", "accept_correction", reviewer="dr-lee")
    assert first.status_code == 201, first.text
    assert first.json()["reviewer"] == "dr-lee" and first.json()["file_name"] == "a.png"
    again = _put(client, auth, finished, "a.png", "accept_correction")
    assert again.status_code == 200 and again.json()["created_at"] == first.json()["created_at"]
    changed = _put(client, auth, finished, "a.png", "keep_original", note="edge is right")
    assert changed.status_code == 201 and changed.json()["reviewer"] == "key default"
    url = f"/v1/jobs/{finished.job_id}/decisions"
    current = client.get(url, headers=auth).json()
    assert current["total"] == 1 and current["items"][0]["decision"] == "keep_original"
    history = client.get(url, params={"history": "true"}, headers=auth).json()["items"]
    assert [h["decision"] for h in history] == ["accept_correction", "keep_original"]
    assert history[0]["superseded_at"] is not None and history[1]["superseded_at"] is None
    # c.png has no proposed correction: it cannot be accepted.
    body = assert_problem(_put(client, auth, finished, "c.png", "accept_correction"), 422)
    assert "no correction" in body["detail"] and body["field"] == "decision"
    assert_problem(_put(client, auth, finished, "a.png", "maybe"), 422)
    assert_problem(_put(client, auth, finished, "a.png", "keep_original", reviewer="a\x00b"), 422)
    missing = f"/v1/jobs/{finished.job_id}/decisions/{finished.model_id}"
    assert_problem(client.put(missing, json={"decision": "keep_original"}, headers=auth), 404)
    # Another project sees neither the job nor its decisions.
    assert_problem(_put(client, other_auth, finished, "a.png", "keep_original"), 404)
    assert_problem(client.get(url, headers=other_auth), 404)
    # Withdrawn: no current decision, the history keeps it; CSV export of the history.
    delete = client.delete(f"{url}/{finished.samples['a.png']}", headers=auth)
    assert delete.status_code == 204
    assert client.get(url, headers=auth).json()["total"] == 0
    exported = client.get(url, params={"history": "true", "format": "csv"}, headers=auth)
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["decision"] for r in rows] == ["accept_correction", "keep_original"] and rows[1][
        "superseded_at"
    ]


def test_bulk_rules_decide_only_undecided_samples(
    client: TestClient, auth: dict[str, str], finished: Finished
) -> None:
    url = f"/v1/jobs/{finished.job_id}/decisions"
    assert _put(client, auth, finished, "b.jpg.png", "needs_reannotation").status_code == 201
    keep = client.post(f"{url}/bulk", json={"rule": "keep_unflagged"}, headers=auth)
    assert keep.json() == {"decided": 1}  # c.png
    accept = client.post(
        f"{url}/bulk", json={"rule": "accept_proposed_above", "min_noise_probability": 0.6}, headers=auth
    )
    assert accept.json() == {"decided": 1}  # a.png (0.9); b.jpg.png (0.7) is decided already
    decided = {r["file_name"]: r["decision"] for r in client.get(url, headers=auth).json()["items"]}
    assert decided == {
        "a.png": "accept_correction",
        "b.jpg.png": "needs_reannotation",
        "c.png": "keep_original",
    }
    assert client.post(f"{url}/bulk", json={"rule": "keep_unflagged"}, headers=auth).json() == {"decided": 0}
    bad = client.post(
        f"{url}/bulk", json={"rule": "accept_proposed_above", "min_noise_probability": 2}, headers=auth
    )
    assert_problem(bad, 422)


def _curate(client: TestClient, auth: dict[str, str], finished: Finished, **body: str) -> dict[str, object]:
    assert _put(client, auth, finished, "a.png", "accept_correction").status_code == 201
    assert _put(client, auth, finished, "b.jpg.png", "needs_reannotation").status_code == 201
    response = client.post(f"/v1/jobs/{finished.job_id}/curated-batches", json=body, headers=auth)
    assert response.status_code == 201, response.text
    assert response.headers["location"].endswith(str(response.json()["id"]))
    return dict(response.json())


def test_curated_batch_takes_decided_masks_and_changes_nothing_else(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], dataset_id: str, finished: Finished
) -> None:
    batches_url = f"/v1/datasets/{dataset_id}/annotation-batches"
    (original,) = client.get(batches_url, headers=auth).json()["items"]
    batch = _curate(client, auth, finished, note="round 2")
    assert batch["kind"] == "curated" and batch["status"] == "accepted" and batch["source"] == "round 2"
    provenance = batch["provenance"]
    assert isinstance(provenance, dict)
    assert provenance["job_id"] == finished.job_id and provenance["source_batches"] == [original["id"]]
    assert provenance["masks"] == {"corrected": 1, "undecided": 1, "left_out": 1}
    files = {f["sample"]: f for f in batch["report"]["files"]}  # type: ignore[index]
    assert set(files) == {"a.png", "c.png"} and files["a.png"]["origin"] == "corrected"
    sample_a, sample_c = finished.samples["a.png"], finished.samples["c.png"]
    curated_a = client.get(f"{batches_url}/{batch['id']}/masks/{sample_a}", headers=auth).content
    corrected_a = client.get(f"/v1/jobs/{finished.job_id}/corrected-masks/{sample_a}", headers=auth).content
    # The correction is served to be looked at (0/255); the curated version stores class indices, as
    # every uploaded mask is stored.
    assert set(np.unique(_png(corrected_a)).tolist()) == {0, 255}
    assert np.array_equal(_png(curated_a), _png(corrected_a) // 255)
    curated_c = client.get(f"{batches_url}/{batch['id']}/masks/{sample_c}", headers=auth).content
    given_c = client.get(f"/v1/jobs/{finished.job_id}/given-masks/{sample_c}", headers=auth).content
    assert np.array_equal(_png(curated_c), _png(given_c))
    # The original batch and its masks are untouched; the curated one is not visible to another project.
    assert client.get(f"{batches_url}/{original['id']}", headers=auth).json() == original
    original_a = client.get(f"{batches_url}/{original['id']}/masks/{sample_a}", headers=auth).content
    assert not np.array_equal(_png(original_a), _png(curated_a))
    assert_problem(client.get(f"{batches_url}/{batch['id']}", headers=other_auth), 404)
    # A new job can train on the curated version.
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "batch_ids": [batch["id"]]}, headers=auth)
    assert job.status_code == 202, job.text


def test_decisions_and_curated_batches_survive_a_restart(
    settings: Settings, client: TestClient, auth: dict[str, str], dataset_id: str, finished: Finished
) -> None:
    batch = _curate(client, auth, finished)
    with TestClient(create_app(settings)) as restarted:
        decisions = restarted.get(f"/v1/jobs/{finished.job_id}/decisions", headers=auth).json()
        assert {d["decision"] for d in decisions["items"]} == {"accept_correction", "needs_reannotation"}
        again = restarted.get(f"/v1/datasets/{dataset_id}/annotation-batches/{batch['id']}", headers=auth)
        assert again.json()["provenance"] == batch["provenance"]


def test_curated_batch_needs_a_mask(client: TestClient, auth: dict[str, str], finished: Finished) -> None:
    url = f"/v1/jobs/{finished.job_id}/curated-batches"
    body = assert_problem(client.post(url, json={"undecided": "exclude"}, headers=auth), 409)
    assert "no mask" in body["detail"]
    assert_problem(client.post(url, json={"undecided": "maybe"}, headers=auth), 422)


def test_nnunet_export_has_the_documented_layout(
    client: TestClient, auth: dict[str, str], dataset_id: str, finished: Finished
) -> None:
    batch = _curate(client, auth, finished)
    url = f"/v1/datasets/{dataset_id}/annotation-batches/{batch['id']}/export"
    response = client.get(url, params={"format": "nnunet", "dataset_number": 7}, headers=auth)
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = set(archive.namelist())
    (root,) = {n.split("/")[0] for n in names}
    assert root.startswith("Dataset007_")
    meta = json.loads(archive.read(f"{root}/dataset.json"))
    # nnU-Net v2's dataset.json (documentation/dataset_format.md): channel_names, labels with
    # background 0 and consecutive indices, numTraining, file_ending.
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert meta["labels"]["background"] == 0 and sorted(meta["labels"].values()) == list(
        range(len(meta["labels"]))
    )
    assert meta["file_ending"] == ".png" and meta["numTraining"] == 2
    labels = sorted(n for n in names if n.startswith(f"{root}/labelsTr/"))
    images = sorted(n for n in names if n.startswith(f"{root}/imagesTr/"))
    assert len(labels) == len(images) == meta["numTraining"]
    cases = [n.rsplit("/", 1)[1].removesuffix(".png") for n in labels]
    assert images == [f"{root}/imagesTr/{c}_0000.png" for c in cases]
    mapping = {
        r["case"]: r["sample_id"]
        for r in csv.DictReader(io.StringIO(archive.read(f"{root}/cases.csv").decode()))
    }
    for case, label in zip(cases, labels, strict=True):
        mask, image = _png(archive.read(label)), _png(archive.read(f"{root}/imagesTr/{case}_0000.png"))
        assert mask.ndim == 2 and image.shape == (*mask.shape, 3)
        # nnU-Net's verify_dataset_integrity: every label value is one of dataset.json's labels.
        assert set(np.unique(mask).tolist()) <= set(meta["labels"].values())
        stored = client.get(f"{url.removesuffix('/export')}/masks/{mapping[case]}", headers=auth).content
        assert np.array_equal(mask, _png(stored))
    # The accepted correction (sample a) is among the labels, with its foreground as class 1.
    assert any(1 in np.unique(_png(archive.read(label))) for label in labels)


def test_coco_export_decodes_to_the_same_masks(
    client: TestClient, auth: dict[str, str], dataset_id: str, finished: Finished
) -> None:
    batches_url = f"/v1/datasets/{dataset_id}/annotation-batches"
    (batch,) = client.get(batches_url, headers=auth).json()["items"]
    doc = client.get(f"{batches_url}/{batch['id']}/export", params={"format": "coco"}, headers=auth).json()
    assert [c["name"] for c in doc["categories"]] == ["polyp"] and len(doc["images"]) == 3
    by_image = {a["image_id"]: a for a in doc["annotations"]}
    for image in doc["images"]:
        stored = _png(
            client.get(
                f"{batches_url}/{batch['id']}/masks/{finished.samples[image['file_name']]}", headers=auth
            ).content
        )
        ann = by_image[image["id"]]
        rle = coco_mask.frPyObjects(ann["segmentation"], image["height"], image["width"])
        decoded = coco_mask.decode(rle)
        assert np.array_equal(decoded, (stored == 1).astype(np.uint8))
        assert ann["area"] == int(stored.sum()) and ann["bbox"] == list(coco_mask.toBbox(rle))


def test_png_export_of_a_curated_batch_holds_class_indices(
    client: TestClient, auth: dict[str, str], dataset_id: str, finished: Finished
) -> None:
    batch = _curate(client, auth, finished)
    url = f"/v1/datasets/{dataset_id}/annotation-batches/{batch['id']}/export"
    archive = zipfile.ZipFile(io.BytesIO(client.get(url, headers=auth).content))
    masks = [_png(archive.read(n)) for n in archive.namelist() if n.endswith(".png")]
    assert len(masks) == 2
    values = set(np.unique(np.concatenate([m.ravel() for m in masks])).tolist())
    assert values == {0, 1}  # the label map's indices: background 0, polyp 1 (no class 255)


def test_png_export_uploads_again_as_the_same_batch(
    client: TestClient, auth: dict[str, str], dataset_id: str, finished: Finished
) -> None:
    batches_url = f"/v1/datasets/{dataset_id}/annotation-batches"
    (batch,) = client.get(batches_url, headers=auth).json()["items"]
    exported = client.get(f"{batches_url}/{batch['id']}/export", headers=auth)
    assert exported.headers["content-type"] == "application/zip"
    again = client.post(
        batches_url,
        data={"annotator": "round trip"},
        files=files_part({"masks.zip": exported.content}),
        headers=auth,
    )
    assert again.status_code == 201, again.text
    for sample_id in finished.samples.values():
        a = client.get(f"{batches_url}/{batch['id']}/masks/{sample_id}", headers=auth).content
        b = client.get(f"{batches_url}/{again.json()['id']}/masks/{sample_id}", headers=auth).content
        assert np.array_equal(_png(a), _png(b))


def test_overlay_and_given_mask(client: TestClient, auth: dict[str, str], finished: Finished) -> None:
    sample = finished.samples["a.png"]
    overlay = client.get(f"/v1/jobs/{finished.job_id}/overlays/{sample}.png", headers=auth)
    assert overlay.headers["content-type"] == "image/png"
    picture = _png(overlay.content)
    assert picture.shape == (30, 50, 3)
    assert (picture == (0, 200, 255)).all(-1).any() and (picture == (255, 196, 0)).all(-1).any()
    given = _png(client.get(f"/v1/jobs/{finished.job_id}/given-masks/{sample}", headers=auth).content)
    assert given.shape == (30, 50) and given.max() == 1


def test_noise_report_filters_by_annotator_batch_and_decision(
    client: TestClient, auth: dict[str, str], dataset_id: str, finished: Finished
) -> None:
    assert _put(client, auth, finished, "a.png", "keep_original").status_code == 201
    url = f"/v1/jobs/{finished.job_id}/noise-report"
    rows = client.get(url, headers=auth).json()["items"]
    assert {r["annotator"] for r in rows} == {"x"} and {r["decision"] for r in rows} == {
        "keep_original",
        None,
    }
    (batch,) = client.get(f"/v1/datasets/{dataset_id}/annotation-batches", headers=auth).json()["items"]

    def names(**params: str) -> list[str]:
        return [r["file_name"] for r in client.get(url, params=params, headers=auth).json()["items"]]

    assert names(decided="true") == ["a.png"] and names(decided="false") == ["b.jpg.png", "c.png"]
    assert names(annotator="x", batch_id=batch["id"]) == ["a.png", "b.jpg.png", "c.png"]
    assert names(annotator="nobody") == [] and names(batch_id=finished.model_id) == []


@pytest.mark.parametrize("value", [False, True, "0.9"])
def test_a_bulk_probability_must_be_a_number(
    client: TestClient, auth: dict[str, str], finished: Finished, value: object
) -> None:
    """false was taken as 0 and accepted every proposal; a probability is a number."""
    url = f"/v1/jobs/{finished.job_id}/decisions/bulk"
    body = {"rule": "accept_proposed_above", "min_noise_probability": value}
    problem = assert_problem(client.post(url, json=body, headers=auth), 422)
    assert "min_noise_probability" in problem["detail"]
    assert client.get(f"/v1/jobs/{finished.job_id}/decisions", headers=auth).json()["total"] == 0
