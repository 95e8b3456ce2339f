"""Results of a succeeded job and inference with its model.

The worker's side is played by the test: objects are written to the store and rows recorded with
``app.services.results.record_results``, exactly as the worker records them; a real (untrained, tiny)
``ModelBundle`` stands in for the trained network.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import JobStatus, TrainingJob
from app.db.session import session_scope
from app.services import inference
from app.services.reports import ReportRow, report_csv, spreadsheet_safe
from app.services.results import JobResults, SampleVerdict, record_results
from gtcorrect.imports import read_cvat
from gtcorrect.label_studio import read_label_studio
from gtcorrect.types import LabelMap
from tests.api.conftest import (
    Finished,
    assert_problem,
    files_part,
    image_png,
    mask_png,
    queued_job,
)

pytestmark = pytest.mark.integration


def test_noise_report_pages_filters_and_sorts(
    client: TestClient, auth: dict[str, str], finished: Finished
) -> None:
    url = f"/v1/jobs/{finished.job_id}/noise-report"
    page = client.get(url, params={"limit": 2}, headers=auth).json()
    assert page["total"] == 3
    assert [r["file_name"] for r in page["items"]] == ["a.png", "b.jpg.png"]  # least likely clean first
    assert page["items"][0]["changed_fraction"] == 0.25
    flagged = client.get(url, params={"flagged": "true", "sort": "-clean_probability"}, headers=auth).json()
    assert [r["file_name"] for r in flagged["items"]] == ["b.jpg.png", "a.png"]
    clean = client.get(url, params={"flagged": "false"}, headers=auth).json()["items"]
    assert clean[0]["changed_fraction"] is None
    bad = assert_problem(client.get(url, params={"sort": "colour"}, headers=auth), 422)
    assert "colour" in bad["detail"]
    job = client.get(f"/v1/jobs/{finished.job_id}", headers=auth).json()
    assert job["status"] == "succeeded" and job["estimated_noise_rate"] == pytest.approx(2 / 3)


def test_noise_report_csv(client: TestClient, auth: dict[str, str], finished: Finished) -> None:
    response = client.get(f"/v1/jobs/{finished.job_id}/noise-report", params={"format": "csv"}, headers=auth)
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["file_name"] for r in rows] == ["a.png", "b.jpg.png", "c.png"]
    assert (
        rows[0]["flagged"] == "true"
        and rows[2]["flagged"] == "false"
        and float(rows[2]["clean_probability"]) == pytest.approx(0.9)
    )


def test_annotator_report_json_and_csv(client: TestClient, auth: dict[str, str], finished: Finished) -> None:
    url = f"/v1/jobs/{finished.job_id}/annotators"
    page = client.get(url, headers=auth).json()
    assert page["total"] == 1
    (row,) = page["items"]
    assert row["annotator"] == "x" and row["n_flagged"] == 2 and row["relative_offset_px"] is None
    (parsed,) = list(
        csv.DictReader(io.StringIO(client.get(url, params={"format": "csv"}, headers=auth).text))
    )
    assert parsed["verdict"] == "too few masks (3) to judge" and parsed["offset_px"] == "2.5"


def test_annotators_plot_and_the_dataset_view(
    client: TestClient, auth: dict[str, str], finished: Finished, dataset_id: str
) -> None:
    png = client.get(f"/v1/jobs/{finished.job_id}/plots/annotators.png", headers=auth)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size[0] >= 600
    # A second annotator uploads after the job: listed, without a verdict yet.
    later = client.post(
        f"/v1/datasets/{dataset_id}/annotation-batches",
        data={"annotator": "y"},
        files=files_part({"c.png": mask_png(30, 50)}),
        headers=auth,
    )
    assert later.status_code == 201, later.text
    page = client.get(f"/v1/datasets/{dataset_id}/annotators", headers=auth).json()
    assert page["total"] == 2 and [a["annotator"] for a in page["items"]] == ["x", "y"]
    x, y = page["items"]
    assert (x["n_batches"], x["n_masks"], x["job_id"]) == (1, 3, finished.job_id)
    assert x["report"]["verdict"] == "too few masks (3) to judge" and x["last_upload_at"].endswith("Z")
    assert (y["n_masks"], y["job_id"], y["report"]) == (1, None, None)


def test_noise_report_csv_cannot_run_formulas() -> None:
    row = ReportRow(
        uuid.uuid4(),
        '=HYPERLINK("http://x","y").png',
        uuid.uuid4(),
        0.2,
        True,
        -1.5,
        1,
        False,
        "=net.excess",
        True,
        0.1,
        7,
        "-vendor",
        uuid.uuid4(),
        None,
    )
    (parsed,) = list(csv.DictReader(io.StringIO(report_csv([row]))))
    assert parsed["decided_by"] == "'=net.excess"
    assert parsed["file_name"] == '\'=HYPERLINK("http://x","y").png'
    assert parsed["loss"] == "-1.5"  # numbers are not text: no apostrophe
    assert parsed["annotator"] == "'-vendor"
    assert spreadsheet_safe("@sum.png") == "'@sum.png" and spreadsheet_safe("a-b.png") == "a-b.png"


def test_corrected_masks_single_and_zip(client: TestClient, auth: dict[str, str], finished: Finished) -> None:
    one = client.get(f"/v1/jobs/{finished.job_id}/corrected-masks/{finished.samples['a.png']}", headers=auth)
    assert one.headers["content-type"] == "image/png"
    assert np.asarray(Image.open(io.BytesIO(one.content))).shape == (30, 50)
    missing = client.get(
        f"/v1/jobs/{finished.job_id}/corrected-masks/{finished.samples['c.png']}", headers=auth
    )
    assert_problem(missing, 404)
    archive = client.get(f"/v1/jobs/{finished.job_id}/corrected-masks.zip", headers=auth)
    assert archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
        assert sorted(z.namelist()) == ["a.png", "b.jpg.png"]
        assert z.read("a.png") == one.content


def test_review_task_goes_to_cvat_and_its_export_comes_back_as_a_batch(
    client: TestClient, auth: dict[str, str], finished: Finished, dataset_id: str
) -> None:
    task = client.get(f"/v1/jobs/{finished.job_id}/review-task.xml", headers=auth)
    assert task.status_code == 200, task.text
    assert task.headers["content-type"].startswith("application/xml")
    images = read_cvat(task.content, LabelMap(("background", "polyp")), max_pixels=10_000)
    assert [i.file_name for i in images] == ["a.png", "b.jpg.png"]  # the flagged ones, most doubtful first
    for image in images:
        corrected = client.get(
            f"/v1/jobs/{finished.job_id}/corrected-masks/{finished.samples[image.file_name]}", headers=auth
        )
        np.testing.assert_array_equal(image.draw(), np.asarray(Image.open(io.BytesIO(corrected.content))) > 0)
    # As CVAT hands the reviewed task back: the same file format, uploaded as a batch.
    batch = client.post(
        f"/v1/datasets/{dataset_id}/annotation-batches",
        data={"annotator": "reviewer"},
        files=files_part({"annotations.xml": task.content}),
        headers=auth,
    )
    assert batch.status_code == 201, batch.text
    assert batch.json()["report"]["format"] == "cvat" and batch.json()["report"]["accepted"] == 2


def test_review_task_goes_to_label_studio_and_its_export_comes_back_as_a_batch(
    client: TestClient, auth: dict[str, str], finished: Finished, dataset_id: str
) -> None:
    response = client.get(f"/v1/jobs/{finished.job_id}/review-task.json", headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    tasks = response.json()
    assert [t["data"]["image"] for t in tasks] == ["a.png", "b.jpg.png"]  # the flagged, most doubtful first
    proposed, given = tasks[0]["predictions"]
    assert proposed["model_version"] == finished.model_id and proposed["score"] == pytest.approx(0.9)
    assert given["model_version"] == "given mask" and "score" not in given
    # As Label Studio exports the project once a reviewer has submitted each correction as proposed.
    export = [
        {
            "id": k + 1,
            **task,
            "annotations": [
                {
                    "id": k + 1,
                    "completed_by": {"id": 1, "email": "reviewer@example.org"},
                    "was_cancelled": False,
                    "result": task["predictions"][0]["result"],
                }
            ],
        }
        for k, task in enumerate(tasks)
    ]
    polyp = LabelMap(("background", "polyp"))
    for image, task in zip(read_label_studio(export, polyp, max_pixels=10_000), tasks, strict=True):
        corrected = client.get(
            f"/v1/jobs/{finished.job_id}/corrected-masks/{finished.samples[image.file_name]}", headers=auth
        )
        np.testing.assert_array_equal(image.draw(), np.asarray(Image.open(io.BytesIO(corrected.content))) > 0)
        task["annotations"] = [{"id": 9, "result": task["predictions"][1]["result"]}]  # the given mask
        (given_back,) = read_label_studio([task], polyp, max_pixels=10_000)
        np.testing.assert_array_equal(given_back.draw(), np.asarray(Image.open(io.BytesIO(mask_png(30, 50)))))
    batch = client.post(
        f"/v1/datasets/{dataset_id}/annotation-batches",
        data={"annotator": "reviewer"},
        files=files_part({"project-1.json": json.dumps(export).encode()}),
        headers=auth,
    )
    assert batch.status_code == 201, batch.text
    report = batch.json()["report"]
    assert report["format"] == "label-studio" and report["accepted"] == 2
    assert report["export_annotators"] == ["reviewer@example.org"]


def test_gmm_round_plots(client: TestClient, auth: dict[str, str], finished: Finished) -> None:
    page = client.get(f"/v1/jobs/{finished.job_id}/plots/gmm-rounds", headers=auth).json()
    rounds = page["items"]
    assert [r["round"] for r in rounds] == [0, 1] and page["total"] == 2
    png = client.get(rounds[1]["url"], headers=auth)
    assert png.headers["content-type"] == "image/png"
    assert np.asarray(Image.open(io.BytesIO(png.content)))[0, 0] == 1
    assert_problem(client.get(f"/v1/jobs/{finished.job_id}/plots/gmm-rounds/7.png", headers=auth), 404)


def test_results_of_unfinished_job_are_409(client: TestClient, auth: dict[str, str], dataset_id: str) -> None:
    job_id, samples = queued_job(client, auth, dataset_id)
    for path in (
        "noise-report",
        "corrected-masks.zip",
        "review-task.xml",
        "review-task.json",
        "plots/gmm-rounds",
        f"corrected-masks/{samples['a.png']}",
    ):
        body = assert_problem(client.get(f"/v1/jobs/{job_id}/{path}", headers=auth), 409)
        assert "queued" in body["detail"]


def test_models_listing_and_latest(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], dataset_id: str, finished: Finished
) -> None:
    listed = client.get("/v1/models", params={"dataset_id": dataset_id}, headers=auth).json()
    assert [m["id"] for m in listed["items"]] == [finished.model_id]
    latest = client.get(f"/v1/datasets/{dataset_id}/models/latest", headers=auth).json()
    assert (
        latest["id"] == finished.model_id and latest["version"] == 1 and latest["job_id"] == finished.job_id
    )
    assert_problem(client.get(f"/v1/models/{finished.model_id}", headers=other_auth), 404)


def test_segment_upload_in_every_format(client: TestClient, auth: dict[str, str], finished: Finished) -> None:
    url = f"/v1/models/{finished.model_id}/segment"
    upload = files_part({"new.png": image_png(37, 61, 9)}, "file")
    mask = client.post(url, files=upload, headers=auth)
    assert mask.status_code == 200, mask.text
    assert mask.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(mask.content)))
    assert pixels.shape == (37, 61) and set(np.unique(pixels).tolist()) <= {0, 255}

    as_json = client.post(url, params={"format": "json"}, files=upload, headers=auth).json()
    assert (as_json["width"], as_json["height"]) == (61, 37)
    assert sum(c["area"] for c in as_json["classes"]) == 37 * 61
    assert as_json["classes"][1]["area"] == int((pixels == 255).sum())
    assert 0.5 <= as_json["mean_confidence"] <= 1.0

    prob = client.post(url, params={"format": "probabilities"}, files=upload, headers=auth)
    assert np.asarray(Image.open(io.BytesIO(prob.content))).shape == (37, 61)
    npy = np.load(io.BytesIO(client.post(url, params={"format": "npy"}, files=upload, headers=auth).content))
    assert npy.shape == (2, 37, 61) and np.allclose(npy.sum(axis=0), 1.0, atol=1e-4)


def test_segment_with_flips_averages_the_flipped_answers(
    client: TestClient, auth: dict[str, str], finished: Finished
) -> None:
    url = f"/v1/models/{finished.model_id}/segment"
    pixels = np.asarray(Image.open(io.BytesIO(image_png(37, 61, 9))))

    def probabilities(image: np.ndarray, **params: object) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
        upload = files_part({"new.png": buffer.getvalue()}, "file")
        answer = client.post(url, params={"format": "npy", **params}, files=upload, headers=auth)
        assert answer.status_code == 200, answer.text
        return np.load(io.BytesIO(answer.content))

    # The service's own answers for the image and its flips, each flipped back, averaged: what flips=true
    # answers in one request (resizing and restoring commute with flips; the mean is taken before restoring).
    views = [
        probabilities(pixels),
        probabilities(pixels[:, ::-1])[:, :, ::-1],
        probabilities(pixels[::-1])[:, ::-1],
        probabilities(pixels[::-1, ::-1])[:, ::-1, ::-1],
    ]
    flipped = probabilities(pixels, flips="true")
    np.testing.assert_allclose(flipped, np.mean(views, axis=0), atol=2e-3)
    assert not np.allclose(flipped, views[0], atol=1e-3)  # the network is not flip-symmetric

    mask = np.asarray(
        Image.open(
            io.BytesIO(
                client.post(
                    url,
                    params={"flips": "true"},
                    files=files_part({"new.png": image_png(37, 61, 9)}, "file"),
                    headers=auth,
                ).content
            )
        )
    )
    np.testing.assert_array_equal(mask, np.where(flipped[1] > 0.5, 255, 0))
    batch = client.post(
        f"/v1/models/{finished.model_id}/segment-batch",
        params={"flips": "true"},
        files=files_part({"new.png": image_png(37, 61, 9)}),
        headers=auth,
    )
    assert batch.status_code == 200, batch.text
    in_zip = np.asarray(Image.open(io.BytesIO(zipfile.ZipFile(io.BytesIO(batch.content)).read("new.png"))))
    np.testing.assert_array_equal(in_zip, mask)
    assert_problem(
        client.post(
            url, params={"flips": "maybe"}, files=files_part({"n.png": image_png(8, 8)}, "file"), headers=auth
        ),
        422,
    )


def test_segment_batch_answers_a_zip_of_masks(
    client: TestClient, auth: dict[str, str], finished: Finished, dataset_id: str
) -> None:
    url = "/v1/models/latest/segment-batch"
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("scans/c.png", image_png(20, 24, 3))
    sizes = {"a.png": (37, 61), "b.jpg": (40, 30)}
    parts = files_part({name: image_png(h, w, 5) for name, (h, w) in sizes.items()})
    parts.append(("files", ("more.zip", inner.getvalue(), "application/zip")))
    response = client.post(url, params={"dataset_id": dataset_id}, files=parts, headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == ["a.png", "b.png", "c.png", "predictions.json"]
    for name, (h, w) in {**sizes, "c.png": (20, 24)}.items():
        mask = np.asarray(Image.open(io.BytesIO(archive.read(name.replace(".jpg", ".png")))))
        assert mask.shape == (h, w) and set(np.unique(mask).tolist()) <= {0, 255}, name
    summary = json.loads(archive.read("predictions.json"))
    assert summary["model_id"] == finished.model_id and len(summary["images"]) == 3
    first = next(i for i in summary["images"] if i["file"] == "a.png")
    assert (first["width"], first["height"]) == (61, 37) and sum(first["area"].values()) == 37 * 61

    # All or nothing, every problem named: unreadable files, clashing names, a format without a PNG.
    bad = files_part({"x.png": b"garbage", "y.png": b"nope", "ok.png": image_png(8, 8)})
    body = assert_problem(client.post(url, params={"dataset_id": dataset_id}, files=bad, headers=auth), 422)
    assert sorted(f["file"] for f in body["invalid_files"]) == ["x.png", "y.png"]
    clash = files_part({"a.png": image_png(8, 8), "a.jpg": image_png(8, 8)})
    body = assert_problem(client.post(url, params={"dataset_id": dataset_id}, files=clash, headers=auth), 422)
    assert "overwrite" in body["detail"] and len(body["invalid_files"]) == 2
    npy = client.post(url, params={"dataset_id": dataset_id, "format": "npy"}, files=clash, headers=auth)
    assert_problem(npy, 422)


def test_segment_outputs_are_bounded(
    client: TestClient, auth: dict[str, str], finished: Finished, monkeypatch: pytest.MonkeyPatch
) -> None:
    # format=npy sends (K, H, W) float32: above the bound it is refused, naming the format and why.
    monkeypatch.setattr(inference, "MAX_NPY_BYTES", 4 * 2 * 37 * 61 - 1)
    url = f"/v1/models/{finished.model_id}/segment"
    upload = files_part({"new.png": image_png(37, 61, 9)}, "file")
    body = assert_problem(client.post(url, params={"format": "npy"}, files=upload, headers=auth), 422)
    assert body["field"] == "format" and "format=probabilities" in body["detail"]
    assert client.post(url, params={"format": "png"}, files=upload, headers=auth).status_code == 200


def test_segment_sample_with_latest_model(
    client: TestClient, auth: dict[str, str], dataset_id: str, finished: Finished
) -> None:
    response = client.post(
        "/v1/models/latest/segment",
        params={"dataset_id": dataset_id, "format": "json"},
        data={"sample_id": finished.samples["c.png"]},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["width"], response.json()["height"]) == (50, 30)
    assert response.json()["model_id"] == finished.model_id


def test_segment_bad_input(client: TestClient, auth: dict[str, str], finished: Finished) -> None:
    url = f"/v1/models/{finished.model_id}/segment"
    body = assert_problem(
        client.post(url, files=files_part({"x.png": b"garbage"}, "file"), headers=auth), 422, "x.png"
    )
    assert "not a readable image" in body["invalid_files"][0]["reason"]
    both = client.post(
        url,
        data={"sample_id": finished.samples["a.png"]},
        files=files_part({"x.png": image_png(8, 8)}, "file"),
        headers=auth,
    )
    assert "exactly one" in assert_problem(both, 422)["detail"]
    assert_problem(client.post(url, headers=auth), 415)
    assert_problem(
        client.post(
            "/v1/models/latest/segment", files=files_part({"x.png": image_png(8, 8)}, "file"), headers=auth
        ),
        422,
    )
    assert_problem(
        client.post(
            "/v1/models/not-a-model/segment",
            files=files_part({"x.png": image_png(8, 8)}, "file"),
            headers=auth,
        ),
        422,
    )


def test_noise_report_names_the_structure_that_looks_wrong(
    client: TestClient, auth: dict[str, str], db_session_factory: sessionmaker[Session]
) -> None:
    body = {"name": "chest", "label_map": {"0": "background", "1": "lung", "2": "heart"}}
    dataset_id = client.post("/v1/datasets", json=body, headers=auth).json()["id"]
    job_id, samples = queued_job(client, auth, dataset_id)
    batch = client.get(f"/v1/datasets/{dataset_id}/annotation-batches", headers=auth).json()["items"][0]
    annotation = {f["sample_id"]: uuid.UUID(f["annotation_id"]) for f in batch["report"]["files"]}
    # What the worker records (worker.push.verdicts): per foreground class, the given mask's Dice to the
    # prediction; None where neither has the class, no list at all from a job before per-class figures.
    per_class: dict[str, list[float | None] | None] = {
        "a.png": [0.93, 0.21],  # the heart is drawn wrong
        "b.jpg.png": [None, 0.95],  # no lung in either
        "c.png": None,
    }
    # ... and why a flagged mask's correction was held back (the gate's first failed check).
    why = "masks of this size are flagged beyond the noise rate: the network may fail here"
    verdicts = [
        SampleVerdict(
            uuid.UUID(samples[n]),
            annotation[samples[n]],
            0.5,
            n == "a.png",
            0.1,
            1,
            class_dice=d,
            withheld_because=why if n == "a.png" else None,
        )
        for n, d in per_class.items()
    ]
    with session_scope(db_session_factory) as session:
        job = session.get_one(TrainingJob, uuid.UUID(job_id))
        job.status, job.attempt = JobStatus.running, 1
    with session_scope(db_session_factory) as session:
        results = JobResults(verdicts, [], "unused/weights.pt", {"dice": 0.5}, {"phase": "done"})
        record_results(session, uuid.UUID(job_id), 1, results)

    url = f"/v1/jobs/{job_id}/noise-report"
    rows = {
        r["file_name"]: r for r in client.get(url, params={"sort": "file_name"}, headers=auth).json()["items"]
    }
    a, b, c = rows["a.png"], rows["b.jpg.png"], rows["c.png"]
    assert (a["worst_class"], a["worst_class_dice"]) == ("heart", pytest.approx(0.21))
    assert a["classes"] == [
        {"index": 1, "name": "lung", "dice_to_prediction": pytest.approx(0.93)},
        {"index": 2, "name": "heart", "dice_to_prediction": pytest.approx(0.21)},
    ]
    assert b["worst_class"] == "heart" and [x["name"] for x in b["classes"]] == ["heart"]
    assert (c["worst_class"], c["worst_class_dice"], c["classes"]) == (None, None, [])
    assert (a["withheld_because"], b["withheld_because"]) == (why, None)
    table = list(csv.DictReader(io.StringIO(client.get(url, params={"format": "csv"}, headers=auth).text)))
    assert {r["file_name"]: r["worst_class"] for r in table} == {
        "a.png": "heart",
        "b.jpg.png": "heart",
        "c.png": "",
    }
    assert "classes" not in table[0]
    assert {r["file_name"]: r["withheld_because"] for r in table} == {
        "a.png": why,
        "b.jpg.png": "",
        "c.png": "",
    }
