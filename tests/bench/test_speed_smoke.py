"""Short run of the speed benchmark: the service on real Postgres, Redis and SeaweedFS, the embedded
``gtcorrect serve``, the engine in-process; every figure present and consistent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.speed import main

pytestmark = pytest.mark.integration


def test_smoke_run_measures_every_path(tmp_path: Path) -> None:
    out, markdown = tmp_path / "speed.json", tmp_path / "BENCHMARKS.md"
    assert main(["--smoke", "--out", str(out), "--benchmarks", str(markdown)]) == 0
    log = json.loads(out.read_text())
    for row in log["latency"].values():
        for path in ("service", "service_db_lookups", "in_process_paired", "in_process", "forward"):
            assert row[path]["n"] == 5 and 0 < row[path]["p50_ms"] <= row[path]["p95_ms"], (path, row)
    concurrency = log["concurrency"]
    assert concurrency["one"]["clients"] == 1 and concurrency["many"]["clients"] == 8
    assert concurrency["many_alone"]["clients"] == 8 and concurrency["many_alone"]["images_per_s"] > 0
    assert concurrency["ratio"] == pytest.approx(
        concurrency["many"]["images_per_s"] / concurrency["one"]["images_per_s"]
    )
    assert log["batch"]["batch_images_per_s"] > 0 and log["batch"]["single_images_per_s"] > 0
    assert {mode: r["masks"] for mode, r in log["ingest"].items()} == {"s3": 20, "embedded": 20}
    training = log["training"]
    assert training["plain_epochs"] == training["gt_epochs"] == training["epochs"]
    text = markdown.read_text()
    assert "<!-- speed:start -->" in text and "| 32 px |" in text and "| s3 | 20 |" in text
    assert "with flips=true" in text


def test_engine_only_needs_no_services(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    assert main(["--smoke", "--engine-only", "--no-markdown", "--out", str(out)]) == 0
    log = json.loads(out.read_text())
    assert "service" not in log["latency"]["32"] and "ingest" not in log
    flips = log["latency"]["32"]["flips"]  # the same requests with and without flips=true, alternated
    assert flips["plain"]["n"] == flips["flips"]["n"] == 5 and flips["flips"]["p50_ms"] > 0
    assert log["training"]["gt_epochs"] == log["training"]["epochs"]
