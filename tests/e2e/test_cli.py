"""The ``gtcorrect`` console script's service commands, run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db.models import Project
from app.db.session import make_engine, make_session_factory, session_scope
from app.services.projects import authenticate


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "gtcorrect"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "app.cli"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GTC_")}
    return {**env, "GTC_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}


def _run(args: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_cli(), *args], env=_env(data_dir), capture_output=True, text=True, timeout=120)


def test_migrate_then_create_project_prints_a_working_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    migrated = _run(["migrate"], data_dir)
    assert migrated.returncode == 0, migrated.stderr
    created = _run(["admin", "create-project", "radiology"], data_dir)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]

    engine = make_engine(f"sqlite:///{data_dir}/gtcorrect.db")
    try:
        with session_scope(make_session_factory(engine)) as session:
            assert authenticate(session, key).name == "radiology"
            assert session.scalars(select(Project.name)).all() == ["radiology"]
    finally:
        engine.dispose()

    again = _run(["admin", "create-project", "radiology"], data_dir)
    assert again.returncode == 2 and "'radiology' already exists" in again.stderr, again.stderr


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(["frobnicate"], tmp_path)
    assert result.returncode == 2 and "invalid choice: 'frobnicate'" in result.stderr, result.stderr


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_worker_starts_on_the_embedded_broker_and_stops_cleanly(tmp_path: Path, log_format: str) -> None:
    log = tmp_path / "worker.log"
    env = {**_env(tmp_path / "data"), "GTC_LOG_FORMAT": log_format}
    with log.open("wb") as out:
        proc = subprocess.Popen([*_cli(), "worker"], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 90
        while "ready." not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.5)
        assert "gtcorrect.train" in log.read_text()
        if log_format == "json":  # Celery's own lines too; its start-up banner is no log record
            records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
            [ready] = [r for r in records if r["message"].endswith("ready.")]
            assert ready["logger"].startswith("celery") and ready["level"] == "INFO"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_help_and_the_client_start_without_torch_numpy_or_the_database() -> None:
    # What makes `gtcorrect --help` and `gtcorrect client ...` start in a fraction of a second (the CPU
    # time is in BENCHMARKS.md, "Start-up"): the heavy modules load only in the commands that use them.
    probe = (
        "import sys, app.cli\n"
        "app.cli.build_parser().parse_args(['client', 'presets'])\n"
        "import gtcorrect, gtcorrect.client\n"
        "print(sorted({'torch', 'numpy', 'monai', 'sqlalchemy', 'fastapi'} & set(sys.modules)))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr
    shown = subprocess.run([*_cli(), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "client" in shown.stdout and "train" in shown.stdout
