"""THE acceptance test: the whole flow over HTTP against real processes.

Production shape: uvicorn + a prefork Celery worker (separate processes) on PostgreSQL, Redis and S3
(SeaweedFS). Embedded shape: ``gtcorrect serve`` alone (SQLite, local objects, filesystem broker, its
own worker). Both run ``tests.e2e.flow.run_flow``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.cli import worker_command
from tests.e2e.flow import run_flow, run_tiny_clean_job
from tests.support.processes import (
    children,
    embedded_serve,
    quiet_env,
    serve_command,
    start_logged,
    stop_logged,
    tail,
    wait_ready,
)
from tests.support.s3server import free_ports

pytestmark = pytest.mark.integration


def _client(base_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60.0)


@pytest.fixture
def production_stack(settings_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of uvicorn + one prefork worker on Postgres, Redis and S3."""
    env = quiet_env(settings_env)
    created = subprocess.run(
        [*serve_command(), "admin", "create-project", "e2e"], env=env, capture_output=True, text=True
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    (port,) = free_ports(1)
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    api = start_logged(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env,
        api_log,
    )
    worker = start_logged(worker_command("prefork", 1), env, worker_log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, api, api_log)
        yield base_url, key
    finally:
        stop_logged(api)
        stop_logged(worker)
        print(f"--- api log ---\n{tail(api_log)}\n--- worker log ---\n{tail(worker_log)}")


def test_flow_on_postgres_redis_s3_and_a_celery_worker(production_stack: tuple[str, str]) -> None:
    base_url, key = production_stack
    with _client(base_url, key) as client:
        outcome = run_flow(client, seed=0)
    assert outcome.job["attempt"] == 1


def test_flow_in_embedded_mode(tmp_path: Path) -> None:
    workers: list[int] = []
    with embedded_serve(tmp_path) as served:
        key_file = served.data_dir / "api_key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert served.key in served.log.read_text(), "the key is printed once on first start"
        with _client(served.base_url, served.key) as client:
            run_flow(client, seed=1)
            run_tiny_clean_job(client)
        assert (served.data_dir / "gtcorrect.db").is_file()
        assert any((served.data_dir / "objects").rglob("*.pt"))
        workers = children(served.proc.pid)
        assert workers, "gtcorrect serve must run its own worker subprocess"
    assert served.exit_code == 0, f"gtcorrect serve exited with {served.exit_code}"
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "the worker outlived serve"
