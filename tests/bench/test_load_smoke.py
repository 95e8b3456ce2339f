"""Short run of the load benchmark: real Postgres, Redis, SeaweedFS and a uvicorn subprocess on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.load import ENDPOINTS, main

pytestmark = pytest.mark.integration


def test_short_load_run_hits_every_endpoint_without_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "load.json"
    assert main(["--clients", "5", "--duration", "5", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    endpoints = result["endpoints"]
    assert sorted(endpoints) == sorted(e.name for e in ENDPOINTS)
    for name, figures in endpoints.items():
        assert figures["requests"] > 0, f"{name} was never called"
        assert figures["errors"] == 0, f"{name}: {figures['error_samples']}"
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
    assert result["total"]["requests"] == sum(f["requests"] for f in endpoints.values())
    assert "| POST segment |" in capsys.readouterr().out


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--clients", "0"])
