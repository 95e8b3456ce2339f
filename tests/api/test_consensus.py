"""Consensus batches over HTTP on real Postgres and S3: three annotators outline the same discs, one of
them 4 px too wide; the consensus recovers the discs and its provenance names the wide annotator."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from scipy import ndimage
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import JobStatus, TrainingJob
from app.db.session import session_scope
from app.settings import Settings
from app.storage.base import ObjectStore
from gtcorrect.data import resize_mask
from tests.api.conftest import assert_problem, count_rows, files_part, image_png, png_bytes
from tests.worker.seed import tiny_config
from worker.fetch import fetch_inputs
from worker.runner import RunnerContext, run_job

pytestmark = pytest.mark.integration

H, W = 40, 60


def _disc(i: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((yy - 20) ** 2 + (xx - 18 - 3 * i) ** 2 < (6 + i % 3) ** 2).astype(np.uint8)


def _discs(
    client: TestClient, auth: dict[str, str], dataset_id: str
) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Six images s0.png ... s5.png uploaded: (file name -> sample id, file name -> its true disc)."""
    names = [f"s{i}.png" for i in range(6)]
    upload = client.post(
        f"/v1/datasets/{dataset_id}/images",
        files=files_part({n: image_png(H, W, seed=i) for i, n in enumerate(names)}),
        headers=auth,
    ).json()
    return {f["file"]: f["id"] for f in upload["files"]}, {n: _disc(i) for i, n in enumerate(names)}


def _batch(client: TestClient, auth: dict[str, str], dataset_id: str, annotator: str, masks: dict) -> str:
    response = client.post(
        f"/v1/datasets/{dataset_id}/annotation-batches",
        data={"annotator": annotator},
        files=files_part({name: png_bytes(m * 255) for name, m in masks.items()}),
        headers=auth,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _mask(client: TestClient, auth: dict[str, str], dataset_id: str, batch: str, sample: str) -> np.ndarray:
    url = f"/v1/datasets/{dataset_id}/annotation-batches/{batch}/masks/{sample}"
    response = client.get(url, headers=auth)
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content))) > 0


def test_consensus_batch_recovers_the_shapes_and_names_the_unreliable_annotator(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], dataset_id: str
) -> None:
    ids, truth = _discs(client, auth, dataset_id)
    rng = np.random.default_rng(0)
    speckled = {}
    for n, t in truth.items():
        flip = rng.random(t.shape) < 0.02
        speckled[n] = np.where(flip, 1 - t, t).astype(np.uint8)
    wide = {n: ndimage.binary_dilation(t, iterations=4).astype(np.uint8) for n, t in truth.items()}
    exact = {n: t for n, t in truth.items() if n != "s5.png"}  # s5 has two annotators only
    _batch(client, auth, dataset_id, "ann-exact", exact)
    _batch(client, auth, dataset_id, "ann-wide", wide)
    speckle_batch = _batch(client, auth, dataset_id, "ann-speckle", speckled)

    url = f"/v1/datasets/{dataset_id}/annotation-batches/consensus"
    response = client.post(url, json={"method": "staple", "note": "three vendors"}, headers=auth)
    assert response.status_code == 201, response.text
    batch = response.json()
    assert batch["kind"] == "consensus" and batch["status"] == "accepted"
    assert batch["annotator"] == "consensus (staple)" and batch["source"] == "three vendors"
    assert response.headers["location"].endswith(batch["id"])
    prov = batch["provenance"]
    assert prov["method"] == "staple" and len(prov["source_batches"]) == 3
    assert prov["shared_samples"] == 6 and prov["single_samples"] == 0
    stats = {a["annotator"]: a for a in prov["annotators"]}
    assert {s["masks"] for s in stats.values()} == {5, 6}
    assert stats["ann-exact"]["masks"] == 5
    # The wide annotator draws background as foreground: lowest specificity and Dice.
    assert stats["ann-wide"]["specificity"] < min(stats["ann-exact"]["specificity"], 0.97)
    assert stats["ann-wide"]["dice_vs_consensus"] == min(s["dice_vs_consensus"] for s in stats.values())
    assert batch["report"]["accepted"] == 6
    # Per sample, how far the readers agree: 4 px too wide costs a small disc more than a large one.
    rows = {f["sample"]: f for f in batch["report"]["files"]}
    assert all(0.0 < r["agreement"] < 1.0 for r in rows.values())
    assert rows["s0.png"]["agreement"] < rows["s2.png"]["agreement"]  # radius 6 against radius 8
    assert rows["s0.png"]["contested"] and not rows["s2.png"]["contested"]
    assert [r["masks"] for r in rows.values()] == [3, 3, 3, 3, 3, 2]
    assert prov["contested_samples"] == sum(r["contested"] for r in rows.values())
    assert all(r["contested"] == (r["agreement"] < prov["contested_below"]) for r in rows.values())
    for name in truth:
        got = _mask(client, auth, dataset_id, batch["id"], ids[name])
        inter = (got & (truth[name] > 0)).sum()
        assert 2 * inter / (got.sum() + truth[name].sum()) > 0.95, name

    # The batch trains like any other; or a job makes its own consensus of the batches it is given.
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "batch_ids": [batch["id"]]}, headers=auth)
    assert job.status_code == 202, job.text
    sources = prov["source_batches"]
    body = {"dataset_id": dataset_id, "batch_ids": sources, "consensus": "majority"}
    own = client.post("/v1/jobs", json=body, headers=auth)
    assert own.status_code == 202, own.text
    [made] = own.json()["batch_ids"]
    made_batch = client.get(f"/v1/datasets/{dataset_id}/annotation-batches/{made}", headers=auth).json()
    assert made_batch["kind"] == "consensus" and made_batch["provenance"]["source_batches"] == sources
    assert made_batch["provenance"]["method"] == "majority" and own.json()["samples_used"] == 6

    # Majority over two named batches; refusals name the problem; nothing half-stored.
    before = client.get(f"/v1/datasets/{dataset_id}/annotation-batches", headers=auth).json()["total"]
    one = client.post(url, json={"batch_ids": [speckle_batch]}, headers=auth)
    assert "at least two annotators" in assert_problem(one, 422)["detail"]
    unknown = client.post(url, json={"batch_ids": [speckle_batch, dataset_id]}, headers=auth)
    assert assert_problem(unknown, 422)["field"] == "batch_ids"
    assert_problem(client.post(url, json={"method": "vote"}, headers=auth), 422)
    assert_problem(client.post(url, json={}, headers=other_auth), 404)
    after = client.get(f"/v1/datasets/{dataset_id}/annotation-batches", headers=auth).json()["total"]
    assert after == before
    wide_batch = next(b for b in prov["source_batches"] if b != speckle_batch)
    vote = client.post(
        url, json={"batch_ids": [speckle_batch, wide_batch], "method": "majority"}, headers=auth
    )
    assert vote.status_code == 201, vote.text
    assert "sensitivity" not in vote.json()["provenance"]["annotators"][0]


def test_a_job_learns_from_every_reader_and_judges_the_consensus(
    client: TestClient,
    auth: dict[str, str],
    dataset_id: str,
    settings: Settings,
    db_session_factory: sessionmaker[Session],
    store: ObjectStore,
) -> None:
    ids, truth = _discs(client, auth, dataset_id)
    names_of = {sample: name for name, sample in ids.items()}
    # Four readers, as LIDC's radiologists: one outlines wide, one thin, one did not mark s3 and s4 (an
    # empty mask), and one never read s5.
    drawn = {
        "ann-exact": {n: t for n, t in truth.items() if n != "s5.png"},
        "ann-wide": {n: ndimage.binary_dilation(t, iterations=4).astype(np.uint8) for n, t in truth.items()},
        "ann-thin": {n: ndimage.binary_erosion(t, iterations=2).astype(np.uint8) for n, t in truth.items()},
        "ann-missed": {n: t * (n not in ("s3.png", "s4.png")) for n, t in truth.items()},
    }
    for annotator, masks in drawn.items():
        _batch(client, auth, dataset_id, annotator, masks)
    jobs_before = count_rows(db_session_factory, TrainingJob)
    batches_before = client.get(f"/v1/datasets/{dataset_id}/annotation-batches", headers=auth).json()["total"]
    alone = client.post("/v1/jobs", json={"dataset_id": dataset_id, "train_on": "every_reader"}, headers=auth)
    problem = assert_problem(alone, 422)
    assert problem["field"] == "train_on" and "needs a consensus" in problem["detail"]
    assert count_rows(db_session_factory, TrainingJob) == jobs_before
    after = client.get(f"/v1/datasets/{dataset_id}/annotation-batches", headers=auth).json()["total"]
    assert after == batches_before

    body = {
        "dataset_id": dataset_id,
        "consensus": "staple",
        "train_on": "every_reader",
        "config": tiny_config().to_dict(),
    }
    response = client.post("/v1/jobs", json=body, headers=auth)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["train_on"] == "every_reader"
    [consensus_id] = job["batch_ids"]
    agreed = client.get(f"/v1/datasets/{dataset_id}/annotation-batches/{consensus_id}", headers=auth).json()
    dice_vs = {a["annotator"]: a["dice_vs_consensus"] for a in agreed["provenance"]["annotators"]}
    assert any(f"ann-wide {dice_vs['ann-wide']:.2f}" in note for note in job["notes"])

    # What the worker learns from: each sample's readers' masks as uploaded, at the training size, each
    # weighted by the annotator's Dice against the consensus; the consensus is what the job is given.
    job_id = uuid.UUID(job["id"])
    with session_scope(db_session_factory) as session:
        row = session.get(TrainingJob, job_id)
        assert row is not None
        inputs = fetch_inputs(session, store, uuid.UUID(dataset_id), row.batch_ids, 32)
    readers = inputs.data.readers
    assert readers is not None
    for i, ref in enumerate(inputs.refs):
        name = names_of[str(ref.sample_id)]
        who = [a for a in sorted(drawn) if name in drawn[a]]
        mine = readers.owner == i
        expected = np.stack([resize_mask(drawn[a][name].astype(np.int64), 32) for a in who])
        np.testing.assert_array_equal(readers.masks[mine], expected)
        np.testing.assert_allclose(readers.weights[mine], [dice_vs[a] for a in who])
    assert np.bincount(readers.owner).tolist() == [4, 4, 4, 4, 4, 3]
    contested = {f["sample"] for f in agreed["report"]["files"] if f["contested"]}
    assert {"s3.png", "s4.png"} <= contested

    context = RunnerContext(settings, db_session_factory, store, cancel_poll_s=0.0)
    assert run_job(job_id, context) is JobStatus.succeeded
    consensus_masks = {f["annotation_id"] for f in agreed["report"]["files"]}
    flags = client.get(f"/v1/jobs/{job_id}/noise-report", headers=auth)
    assert flags.status_code == 200, flags.text
    items = flags.json()["items"]
    assert len(items) == 6 and {item["annotation_id"] for item in items} == consensus_masks
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["train_on"] == "every_reader"
