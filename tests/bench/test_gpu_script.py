"""bench/gpu.sh, the prepared GPU run, with its CPU smoke setting: every step runs and every output lands
in $OUT (the CUDA tests are skipped here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bench.report import ROOT

pytestmark = pytest.mark.integration


def test_gpu_script_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,
        "GTC_GPU_DEVICE": "cpu",
        "GTC_GPU_SCHEDULE": "smoke",
        "GTC_GPU_SIZE": "32",
        "GTC_GPU_DATA": "synthetic",
        "GTC_GPU_SEEDS": "0",
        "GTC_GPU_METHODS": "noisy gt",  # the GPU run adds gmm_select: the same path, a third run
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "smoke ok" in proc.stdout and "all done" in proc.stdout, proc.stdout
    runs = json.loads((out / "quality.json").read_text())["runs"]
    assert sorted(key.split("|")[2] for key in runs) == ["gt", "noisy"]
    speed = json.loads((out / "speed.json").read_text())
    assert speed["machine"]["device"] == "cpu" and speed["training"]["gt_epochs"] > 0
    markdown = (out / "BENCHMARKS.md").read_text()
    for section in ("quality-gpu-smoke-strong-0.5", "gpu-speed"):
        assert f"<!-- {section}:start -->" in markdown, section
    with tarfile.open(out / "logs.tar.gz") as logs:
        names = logs.getnames()
    assert any(n.endswith("gpu-tests.log") for n in names) and any(n.endswith("speed.log") for n in names)
    assert (out / "nvidia-smi.txt").exists()
