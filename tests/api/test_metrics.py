"""/metrics over HTTP, read with Prometheus's own text-format parser, on real Postgres and Redis."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import queued_job

pytestmark = pytest.mark.integration


def _scrape(client: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _value(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    return sum(v for got, v in samples if all(got.get(k) == want for k, want in labels.items()))


def test_metrics_count_requests_by_route_template_and_report_jobs_and_queue(
    client: TestClient, auth: dict[str, str], dataset_id: str
) -> None:
    before = _scrape(client)
    queued = _value(before["gtc_jobs"], status="queued")
    job_id, _ = queued_job(client, auth, dataset_id)
    for _ in range(2):
        assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 200
    assert client.get(f"/v1/datasets/{dataset_id}/samples/{job_id}", headers=auth).status_code == 404
    after = _scrape(client)
    requests = after["gtc_http_requests_total"]
    # Counted by route template, not by path: ids do not become labels.
    assert _value(requests, method="GET", route="/v1/jobs/{job_id}", status="200") == 2
    assert _value(requests, method="POST", route="/v1/jobs", status="202") == 1
    assert _value(requests, route="/v1/datasets/{dataset_id}/samples/{sample_id}", status="404") == 1
    assert not any(job_id in labels["route"] for labels, _ in requests)
    latency = after["gtc_http_request_duration_seconds_count"]
    assert _value(latency, method="GET", route="/v1/jobs/{job_id}") == 2
    assert _value(after["gtc_http_request_duration_seconds_sum"], route="/v1/jobs/{job_id}") > 0
    assert {labels["status"] for labels, _ in after["gtc_jobs"]} == {
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    }
    assert _value(after["gtc_jobs"], status="queued") == queued + 1
    # The job was sent to the real broker, where no worker consumes this test's queue.
    [(_, depth_before)], [(_, depth)] = before["gtc_queue_depth"], after["gtc_queue_depth"]
    assert depth_before >= 0 and depth == depth_before + 1
    assert "gtc_job_duration_seconds_count" in after


def test_assets_count_under_their_mount_not_unmatched(client: TestClient) -> None:
    before = _value(_scrape(client).get("gtc_http_requests_total", []), route="/review-assets/{path}")
    assert client.get("/review-assets/review.css").status_code == 200
    assert client.get("/review-assets/nope.css").status_code == 404
    requests = _scrape(client)["gtc_http_requests_total"]
    assert _value(requests, route="/review-assets/{path}") == before + 2
    assert not any("review.css" in labels["route"] for labels, _ in requests)
