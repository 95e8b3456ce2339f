"""Consensus batches over HTTP on real Postgres and S3: three annotators outline the same discs, one of
them 4 px too wide; the consensus recovers the discs and its provenance names the wide annotator."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from scipy import ndimage

from tests.api.conftest import assert_problem, files_part, image_png, png_bytes

pytestmark = pytest.mark.integration

H, W = 40, 60


def _disc(i: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((yy - 20) ** 2 + (xx - 18 - 3 * i) ** 2 < (6 + i % 3) ** 2).astype(np.uint8)


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
    names = [f"s{i}.png" for i in range(6)]
    upload = client.post(
        f"/v1/datasets/{dataset_id}/images",
        files=files_part({n: image_png(H, W, seed=i) for i, n in enumerate(names)}),
        headers=auth,
    ).json()
    ids = {f["file"]: f["id"] for f in upload["files"]}
    truth = {n: _disc(i) for i, n in enumerate(names)}
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
    for name in names:
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
