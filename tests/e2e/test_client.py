"""``gtcorrect.client`` and ``gtcorrect client``: the whole flow from two folders against ``gtcorrect serve``
(subprocesses, no mocks), and the client's retry, error and paging rules against ``httpx.MockTransport``."""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from app.schemas.results import NoiseFlagOut
from gtcorrect.client import ApiError, Client, ClientError, JobFailed
from gtcorrect.client_cli import add_client_commands
from gtcorrect.nnunet_import import read_dataset
from tests.e2e.flow import HEIGHT, N_CORRUPTED, N_IMAGES, WIDTH, e2e_config
from tests.gtcorrect.test_nnunet_import import ROOT, nnunet_folder
from tests.support.processes import client_cli, embedded_serve, serve_command
from tests.worker.synthetic import make_set, png_bytes

CLI_TIMEOUT_S = 600


def _write_set(folder: Path, names: list[str], arrays: list[np.ndarray]) -> None:
    folder.mkdir(parents=True)
    for name, array in zip(names, arrays, strict=True):
        (folder / name).write_bytes(png_bytes(array))


def test_client_run_from_two_folders_against_the_embedded_server(tmp_path: Path) -> None:
    with embedded_serve(tmp_path) as served:
        client_env = {**served.env, "GTC_URL": served.base_url, "GTC_API_KEY": served.key}

        cli = client_cli(client_env, tmp_path, CLI_TIMEOUT_S)

        data = make_set(N_IMAGES, N_CORRUPTED, height=HEIGHT, width=WIDTH, seed=2)
        _write_set(tmp_path / "images", data.names, data.images)
        _write_set(tmp_path / "masks", data.names, data.given)
        config = tmp_path / "cfg.json"
        config.write_text(json.dumps(e2e_config(2)))
        out = tmp_path / "out"
        images, masks = tmp_path / "images", tmp_path / "masks"
        run = cli(
            "run", "--images", images, "--masks", masks, "--name", "discs", "--config", config, "--out", out
        )
        assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
        job_id = run.stdout.split("job ", 1)[1].split()[0]

        shown = cli("jobs", "show", job_id)
        assert shown.returncode == 0, shown.stderr
        job = json.loads(shown.stdout)
        assert job["status"] == "succeeded" and job["id"] == job_id
        total = job["total_epochs"]
        assert "upload images" in run.stderr and "upload masks" in run.stderr, run.stderr
        # The epoch bar: the server's ETA only (tqdm's own would count the wait in the queue).
        bar = [line for line in run.stderr.splitlines() if "epochs [" in line]
        assert bar and f"{total}/{total} epochs [" in bar[-1] and "<" not in bar[-1], run.stderr

        with (out / "report.csv").open(newline="") as f:
            reader = csv.DictReader(f)
            csv_rows = list(reader)
        # Every field of the JSON report but the per-structure list (its worst structure is a column).
        assert reader.fieldnames == [f for f in NoiseFlagOut.model_fields if f != "classes"]
        assert sorted(r["file_name"] for r in csv_rows) == data.names
        rows = json.loads((out / "report.json").read_text())
        assert sorted(r["file_name"] for r in rows) == data.names
        assert f"job {job_id} succeeded: {sum(r['flagged'] for r in rows)} of {N_IMAGES}" in run.stdout
        corrected = [n for n in zipfile.ZipFile(out / "corrected-masks.zip").namelist() if n != "README.txt"]
        assert len(corrected) == sum(r["correction_proposed"] for r in rows), corrected
        plots = sorted((out / "plots").glob("gmm-round-*.png"))
        assert plots and all(p.read_bytes().startswith(b"\x89PNG") for p in plots)

        # One annotator, too few masks to judge: the report says so, per job and per dataset.
        judged = cli("annotators", "--job", job_id, "--plot", tmp_path / "annotators.png")
        assert judged.returncode == 0 and "too few masks" not in judged.stderr, judged.stderr
        assert judged.stdout.startswith("unknown: ") and (tmp_path / "annotators.png").stat().st_size > 1000
        listed = cli("annotators", "--dataset", job["dataset_id"], "--json", tmp_path / "annotators.json")
        assert listed.returncode == 0, listed.stderr
        [row] = json.loads((tmp_path / "annotators.json").read_text())
        assert (row["annotator"], row["n_masks"], row["job_id"]) == ("unknown", N_IMAGES, job_id)

        # From another folder, with no key in the environment: `gtcorrect serve` saved it for its URL.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        bare = {k: v for k, v in client_env.items() if k not in ("GTC_API_KEY", "GTC_DATA_DIR")}
        found = subprocess.run(
            [*serve_command(), "client", "jobs", "show", job_id[:8]],  # the 8 characters a page shows
            env=bare,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            cwd=elsewhere,
        )
        assert found.returncode == 0 and json.loads(found.stdout)["id"] == job_id, found.stderr
        flagged = cli("report", job_id[:8], "--flagged")
        n_flagged = sum(r["flagged"] for r in rows)
        assert flagged.stdout.startswith(f"{n_flagged} of {N_IMAGES} masks flagged"), flagged.stdout
        assert cli("annotators", job_id).stdout.startswith("unknown: ")  # the job as a positional
        assert cli("datasets", "rename", "discs", "discs-round-2").returncode == 0
        assert "discs-round-2" in cli("datasets", "list").stdout
        # A preset and a config together (the config on top), then cancelled and deleted. Its T stage is
        # long, so the cancel surely finds it queued or training.
        long = tmp_path / "long.json"
        long.write_text(json.dumps({**e2e_config(2), "t": {**e2e_config(2)["t"], "epochs": 200}}))
        started = cli("jobs", "start", "--dataset", "discs-round-2", "--preset", "quick", "--config", long)
        assert started.returncode == 0, started.stderr
        second = json.loads(started.stdout)
        assert second["config"]["image_size"] == e2e_config(2)["image_size"]
        assert second["config"]["g"]["warmup_epochs"] == e2e_config(2)["g"]["warmup_epochs"]
        assert second["config"]["t"]["epochs"] == 200
        assert second["id"] in cli("jobs", "list", "--dataset", "discs-round-2").stdout
        assert cli("jobs", "cancel", second["id"][:8]).returncode == 0
        assert cli("jobs", "wait", second["id"]).returncode == 1  # cancelled
        deleted = cli("jobs", "delete", second["id"][:8])
        assert deleted.returncode == 0, deleted.stderr
        assert second["id"] not in cli("jobs", "list").stdout

        fresh = make_set(2, 0, height=52, width=60, seed=3)
        _write_set(tmp_path / "new", ["a.png", "b.png"], [fresh.images[0], fresh.images[1][:30, :44]])
        segmented = cli(
            "segment", tmp_path / "new", "--out", tmp_path / "seg", "--dataset", "discs-round-2"
        )  # by name
        assert segmented.returncode == 0, segmented.stderr
        sizes = {p.name: Image.open(p).size for p in (tmp_path / "seg").glob("*.png")}
        assert sizes == {"a.png": (60, 52), "b.png": (44, 30)}  # one call: segment-batch
        assert len(json.loads((tmp_path / "seg" / "predictions.json").read_text())["images"]) == 2
        flipped = cli(
            "segment",
            tmp_path / "new",
            "--out",
            tmp_path / "seg-flips",
            "--dataset",
            "discs-round-2",
            "--flips",
        )
        assert flipped.returncode == 0, flipped.stderr
        assert {p.name: Image.open(p).size for p in (tmp_path / "seg-flips").glob("*.png")} == sizes
    assert served.exit_code == 0, f"gtcorrect serve exited with {served.exit_code}"


# --- the client's rules, against httpx.MockTransport ------------------------------------------------

PROBLEM = {
    "type": "https://gtcorrect.dev/problems/invalid-input",
    "title": "Invalid input",
    "status": 422,
    "detail": "1 files were rejected; nothing was stored.",
    "invalid_files": [{"file": "img_01.png", "reason": "not a decodable image"}],
}
JOB = {
    "id": "j1",
    "dataset_id": "d1",
    "status": "running",
    "phase": "g_round",
    "epoch": 3,
    "total_epochs": 10,
    "round": 1,
    "error": None,
    "quality": None,
}


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    return Client("http://api.test", "key", transport=httpx.MockTransport(handler), backoff_s=0.0)


def test_get_is_retried_after_a_503_and_a_connection_error() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(503, json={**PROBLEM, "status": 503, "title": "Service unavailable"})
        if len(calls) == 2:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=JOB)

    with _client(handler) as client:
        assert client.job("j1")["status"] == "running"
    assert len(calls) == 3 and all(c.headers["authorization"] == "Bearer key" for c in calls)


def test_a_retry_waits_as_long_as_the_server_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("gtcorrect.client.time.sleep", slept.append)
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "7"}, json={**PROBLEM, "status": 429}),
            httpx.Response(503, headers={"Retry-After": "3600"}, json={**PROBLEM, "status": 503}),
            httpx.Response(200, json=JOB),
        ]
    )
    with _client(lambda request: next(answers)) as client:
        assert client.job("j1")["id"] == "j1"
    assert slept == [7.0, 60.0]  # the server's hint, capped at a minute


def test_get_gives_up_after_its_retries() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    with _client(handler) as client, pytest.raises(ClientError, match="connection refused"):
        client.job("j1")
    assert len(calls) == 4  # the call and 3 retries


def test_post_is_never_retried() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, json={**PROBLEM, "status": 503, "title": "Service unavailable"})

    with _client(handler) as client, pytest.raises(ApiError) as caught:
        client.start_job("d1", {"image_size": 64})
    assert len(calls) == 1 and caught.value.status == 503
    assert json.loads(calls[0].content) == {
        "dataset_id": "d1",
        "config": {"image_size": 64},
        "batch_ids": None,
    }


def test_start_job_sends_the_preset_and_the_consensus_only_when_given() -> None:
    bodies: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.read()))
        return httpx.Response(202, json={**JOB, "status": "queued"})

    with _client(handler) as client:
        client.start_job("d1", preset="quick", batch_ids=["b1"])
        client.start_job("d1")
        client.start_job("d1", consensus="staple", train_on="every_reader")
    assert bodies == [
        {"dataset_id": "d1", "config": {}, "batch_ids": ["b1"], "preset": "quick"},
        {"dataset_id": "d1", "config": {}, "batch_ids": None},
        {
            "dataset_id": "d1",
            "config": {},
            "batch_ids": None,
            "consensus": "staple",
            "train_on": "every_reader",
        },
    ]


def test_segment_asks_for_flips_only_when_told(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    queries: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        queries.append(dict(request.url.params))
        return httpx.Response(200, content=b"mask")

    with _client(handler) as client:
        client.segment(image, "m1")
        client.segment(image, "latest", dataset_id="d1", flips=True)
    assert queries == [{"format": "png"}, {"format": "png", "dataset_id": "d1", "flips": "true"}]


def test_api_error_names_the_problem_and_the_upload_is_one_streamed_zip(tmp_path: Path) -> None:
    (tmp_path / "img_00.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "img_01.png").write_bytes(b"junk")
    (tmp_path / "notes.txt").write_text("not an image: left out")
    bodies: list[tuple[httpx.Request, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append((request, request.read()))
        return httpx.Response(422, json=PROBLEM, headers={"Content-Type": "application/problem+json"})

    with _client(handler) as client, pytest.raises(ApiError) as caught:
        client.upload_masks("d1", tmp_path, "vendor-a", mask_mode="binary", progress=False)
    assert caught.value.status == 422 and caught.value.problem["invalid_files"] == PROBLEM["invalid_files"]
    assert str(caught.value) == (
        "Invalid input (422): 1 files were rejected; nothing was stored. img_01.png: not a decodable image"
    )
    ((request, body),) = bodies
    assert request.url.path == "/v1/datasets/d1/annotation-batches"
    assert int(request.headers["content-length"]) == len(body)
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    parts = body.split(b"--" + boundary)
    assert parts[-1] == b"--\r\n"
    fields = {p.split(b'name="')[1].split(b'"')[0]: p.split(b"\r\n\r\n", 1)[1][:-2] for p in parts[1:-1]}
    assert fields[b"annotator"] == b"vendor-a" and fields[b"mask_mode"] == b"binary"
    assert zipfile.ZipFile(io.BytesIO(fields[b"files"])).namelist() == ["img_00.png", "img_01.png"]


def test_a_coco_export_is_uploaded_as_the_one_file_of_the_batch(tmp_path: Path) -> None:
    export = tmp_path / "instances.json"
    export.write_text('{"images": [], "annotations": []}')
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        return httpx.Response(201, json={"id": "b1", "report": {"accepted": 0}})

    with _client(handler) as client:
        client.upload_masks("d1", export, "cvat", progress=False)
    ((body,),) = [bodies]
    archive = body.split(b"\r\n\r\n", 2)[2]  # after the annotator field and the file part's head
    names = zipfile.ZipFile(io.BytesIO(archive[: archive.rindex(b"\r\n--")])).namelist()
    assert names == ["instances.json"]


def test_noise_report_follows_the_pages() -> None:
    calls: list[httpx.Request] = []
    rows = [{"file_name": f"img_{i:03d}.png", "flagged": True} for i in range(120)]

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        limit = min(int(request.url.params["limit"]), 50)  # the server's page may be smaller than asked
        offset = int(request.url.params["offset"])
        page = {"items": rows[offset : offset + limit], "total": len(rows), "limit": limit, "offset": offset}
        return httpx.Response(200, json=page)

    with _client(handler) as client:
        assert client.noise_report("j1", flagged=True) == rows
    assert [c.url.params["offset"] for c in calls] == ["0", "50", "100"]
    assert all(c.url.params["flagged"] == "true" for c in calls)


def test_a_dataset_is_named_by_id_or_by_its_exact_name() -> None:
    calls: list[httpx.Request] = []
    datasets = [
        {"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "name": "polyps-2"},
        {"id": "d2", "name": "polyps"},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        found = [d for d in datasets if request.url.params["name"] in d["name"]]  # the API matches parts
        return httpx.Response(200, json={"items": found, "total": len(found), "limit": 50, "offset": 0})

    with _client(handler) as client:
        assert client.dataset_id("7C9E6679-7425-40DE-944B-E07FC1F90AE7") == datasets[0]["id"]
        assert calls == []  # an id needs no lookup
        assert client.dataset_id("polyps") == "d2"
        with pytest.raises(ValueError, match="no dataset named 'polyp'"):
            client.dataset_id("polyp")


def test_wait_raises_job_failed_with_the_jobs_error() -> None:
    queued = {**JOB, "status": "queued", "phase": None, "epoch": None, "total_epochs": None, "round": None}
    failed = {**JOB, "status": "failed", "error": "RuntimeError: out of memory"}
    states = iter([queued, {**JOB, "eta_seconds": 12.0}, failed])

    client = _client(lambda request: httpx.Response(200, json=next(states)))
    with client, pytest.raises(JobFailed, match="job j1 failed: RuntimeError: out of memory") as caught:
        client.wait("j1", poll_s=0.0)
    assert caught.value.job["status"] == "failed"


def test_cli_refuses_a_missing_or_empty_folder_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GTC_API_KEY", "key")
    parser = argparse.ArgumentParser()
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    (tmp_path / "empty").mkdir()
    for folder, reason in ((tmp_path / "missing", "not a directory"), (tmp_path / "empty", "no image files")):
        args = parser.parse_args(
            ["client", "run", "--images", str(folder), "--masks", str(folder), "--name", "x"]
        )
        assert args.func(args) == 2
        assert capsys.readouterr().err.startswith(f"error: {folder}: {reason}")


def _multipart(request: httpx.Request) -> dict[bytes, bytes]:
    """The parts of a streamed multipart body by name (the file part's content is the zip)."""
    body = request.read()
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    parts = body.split(b"--" + boundary)[1:-1]
    return {p.split(b'name="')[1].split(b'"')[0]: p.split(b"\r\n\r\n", 1)[1][:-2] for p in parts}


def test_an_nnunet_folder_is_sent_as_one_zip_under_its_folder_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    entries, _, _ = nnunet_folder()
    for name, data in entries.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    sent: list[tuple[httpx.Request, dict[bytes, bytes]]] = []
    answer = {"dataset": {"id": "d9", "name": "hippo"}, "batch_id": "b9", "samples": 3, "masks": 3}

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append((request, _multipart(request)))
        return httpx.Response(201, json=answer)

    with _client(handler) as client:
        assert client.import_nnunet(tmp_path / ROOT, name="hippo", progress=False) == answer
        zipped = tmp_path / "hippocampus.zip"
        zipped.write_bytes(b"PK\x03\x04 as it is")
        client.import_nnunet(zipped, progress=False)
    (request, parts), (_, as_is) = sent
    assert request.url.path == "/v1/datasets/import/nnunet" and parts[b"name"] == b"hippo"
    archive = zipfile.ZipFile(io.BytesIO(parts[b"file"]))
    assert set(archive.namelist()) == {n for n in entries if "/imagesTs/" not in n}  # test images stay home
    layout = read_dataset(archive.namelist(), archive.read)  # what the server reads of it
    assert layout.root == ROOT and len(layout.cases) == 3
    assert as_is == {b"file": b"PK\x03\x04 as it is"}

    monkeypatch.setenv("GTC_API_KEY", "key")
    parser = argparse.ArgumentParser()
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["client", "import-nnunet", str(tmp_path / ROOT / "imagesTr")])
    assert args.func(args) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {tmp_path / ROOT / 'imagesTr'}: not an nnU-Net dataset"
    )
