"""THE acceptance test: the whole flow over HTTP against real processes.

Production shape: uvicorn + a prefork Celery worker (separate processes) on PostgreSQL, Redis and S3
(SeaweedFS). Embedded shape: ``gtcorrect serve`` alone (SQLite, local objects, filesystem broker, its
own worker). Both run ``tests.e2e.flow.run_flow``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.cli import worker_command
from tests.e2e.flow import run_flow, run_tiny_clean_job
from tests.support.processes import children, quiet_env, tail
from tests.support.s3server import free_ports

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 90.0


def _start(
    cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def _wait_http(base_url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{tail(log)}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"server at {base_url} not ready after {START_TIMEOUT_S}s:\n{tail(log)}")


def _client(base_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60.0)


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "gtcorrect"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "app.cli"]


@pytest.fixture
def production_stack(settings_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of uvicorn + one prefork worker on Postgres, Redis and S3."""
    env = quiet_env(settings_env)
    created = subprocess.run(
        [*_cli(), "admin", "create-project", "e2e"], env=env, capture_output=True, text=True
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    (port,) = free_ports(1)
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    api = _start(
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
    worker = _start(worker_command("prefork", 1), env, worker_log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(base_url, api, api_log)
        yield base_url, key
    finally:
        _stop(api)
        _stop(worker)
        print(f"--- api log ---\n{tail(api_log)}\n--- worker log ---\n{tail(worker_log)}")


def test_flow_on_postgres_redis_s3_and_a_celery_worker(production_stack: tuple[str, str]) -> None:
    base_url, key = production_stack
    with _client(base_url, key) as client:
        outcome = run_flow(client, seed=0)
    assert outcome.job["attempt"] == 1


def test_flow_in_embedded_mode(tmp_path: Path) -> None:
    data_dir = tmp_path / "gtc-data"
    env = quiet_env({k: v for k, v in os.environ.items() if not k.startswith("GTC_")})
    env["GTC_DATA_DIR"] = str(data_dir)
    (port,) = free_ports(1)
    log = tmp_path / "serve.log"
    serve = _start([*_cli(), "serve", "--port", str(port)], env, log, cwd=tmp_path)
    base_url = f"http://127.0.0.1:{port}"
    workers: list[int] = []
    try:
        _wait_http(base_url, serve, log)
        key_file = data_dir / "api_key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        assert key in log.read_text(), "the key is printed once on first start"
        with _client(base_url, key) as client:
            run_flow(client, seed=1)
            run_tiny_clean_job(client)
        assert (data_dir / "gtcorrect.db").is_file() and any((data_dir / "objects").rglob("*.pt"))
        workers = children(serve.pid)
        assert workers, "gtcorrect serve must run its own worker subprocess"
    finally:
        code = _stop(serve, signal.SIGTERM)
        print(f"--- serve log ---\n{tail(log)}")
    assert code == 0, f"gtcorrect serve exited with {code}"
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "the worker outlived serve"
