"""Real processes for the durability tests: uvicorn (with its job sweeper) and prefork Celery workers on
PostgreSQL, Redis and S3, each started the way production starts them, killable one by one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from app.cli import worker_command
from app.db.models import TrainingJob
from app.db.session import session_scope
from app.settings import Settings
from tests.support.env import settings_env
from tests.support.processes import quiet_env, tail
from tests.support.s3server import free_ports

START_TIMEOUT_S = 90.0
POLL_S = 0.3


def wait_until(what: str, check: Callable[[], Any], timeout_s: float, detail: Callable[[], str]) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and ``detail()``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(POLL_S)
    raise AssertionError(f"{what} did not happen within {timeout_s}s; {detail()}")


@dataclass
class Stack:
    """An API process and the workers started on it; ``client`` carries the API key."""

    settings: Settings
    env: dict[str, str]
    workdir: Path
    base_url: str
    client: httpx.Client
    factory: sessionmaker[Session]
    workers: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def start_worker(self) -> subprocess.Popen[bytes]:
        """A prefork worker with one child, in its own process group (so the test can kill all of it)."""
        log = self.workdir / f"worker-{len(self.workers) + 1}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                worker_command("prefork", 1),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append((proc, log))
        return proc

    def worker_log(self, index: int) -> str:
        return self.workers[index][1].read_text(errors="replace")

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def row(self, job_id: str) -> TrainingJob:
        with session_scope(self.factory) as session:
            row = session.get(TrainingJob, uuid.UUID(job_id))
            assert row is not None, f"job {job_id} has no row"
            session.expunge(row)
            return row

    def logs(self) -> str:
        parts = [f"--- api log ---\n{tail(self.workdir / 'api.log')}"]
        parts += [f"--- {log.name} ---\n{tail(log)}" for _, log in self.workers]
        return "\n".join(parts)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _create_key(env: dict[str, str]) -> str:
    script = Path(sys.executable).parent / "gtcorrect"
    cli = [str(script)] if script.is_file() else [sys.executable, "-m", "app.cli"]
    created = subprocess.run(
        [*cli, "admin", "create-project", "durable"], env=env, capture_output=True, text=True
    )
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


def _wait_ready(base_url: str, api: subprocess.Popen[bytes], log: Path) -> None:
    def ready() -> bool:
        assert api.poll() is None, f"the API exited with {api.returncode}:\n{tail(log)}"
        try:
            return httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_until("API readiness", ready, START_TIMEOUT_S, lambda: tail(log))


def run_stack(settings: Settings, workdir: Path, factory: sessionmaker[Session]) -> Iterator[Stack]:
    """Start the API for ``settings``; yield; stop the API and every worker still alive."""
    env = quiet_env(settings_env(settings))
    key = _create_key(env)
    (port,) = free_ports(1)
    log = workdir / "api.log"
    cmd = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port)]
    with log.open("wb") as out:
        api = subprocess.Popen(
            [*cmd, "--host", "127.0.0.1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60.0)
    stack = Stack(settings, env, workdir, base_url, client, factory)
    try:
        _wait_ready(base_url, api, log)
        yield stack
    finally:
        client.close()
        for proc, _ in stack.workers:
            _stop(proc)
        _stop(api)
        print(stack.logs())
