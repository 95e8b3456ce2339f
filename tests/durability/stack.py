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
from tests.worker.seed import tiny_config

START_TIMEOUT_S = 90.0
POLL_S = 0.3
JOB_TIMEOUT_S = 240.0
TERMINAL = ("succeeded", "failed", "cancelled")


def long_config(seed: int) -> dict[str, Any]:
    """32 epochs of 12 tiny images (a quarter of a second each here): long enough to kill or cancel it
    in the middle however late the test's polls come. Both G rounds always run (no early stop), so the
    length is fixed."""
    config = tiny_config(seed, rounds=2, t_epochs=24).to_dict()
    config["g"]["warmup_epochs"] = 4
    config["g"]["epochs_per_round"] = 2
    config["g"]["stop_change_frac"] = 0.0
    return config


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
    api: subprocess.Popen[bytes]
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
    # The API runs as in production: without the training allocator settings (app/memory.py sets its own).
    api_env = {k: v for k, v in env.items() if not k.startswith("MALLOC_")}
    with log.open("wb") as out:
        api = subprocess.Popen(
            [*cmd, "--host", "127.0.0.1"],
            env=api_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60.0)
    stack = Stack(settings, env, workdir, base_url, client, factory, api)
    try:
        _wait_ready(base_url, api, log)
        yield stack
    finally:
        client.close()
        for proc, _ in stack.workers:
            _stop(proc)
        _stop(api)
        print(stack.logs())


def recovery_after_kill(
    job: Callable[[], dict[str, Any]], kill: Callable[[], None], detail: Callable[[], str]
) -> tuple[float, dict[str, Any]]:
    """Wait for the job to train past epoch 2, ``kill()`` what trains it, and time how long until a second
    attempt trains past the epoch it had reached; then wait for its end. Returns (seconds, final state)."""

    def at_epoch_2() -> dict[str, Any] | None:
        state = job()
        assert state["status"] not in TERMINAL, f"job ended early: {state}"
        return state if (state["epoch"] or 0) >= 2 else None

    wait_until("epoch 2", at_epoch_2, JOB_TIMEOUT_S, detail)
    killed_at = time.monotonic()
    kill()
    epoch_at_kill = job()["epoch"]

    def training_again() -> dict[str, Any] | None:
        state = job()
        return state if state["attempt"] >= 2 and (state["epoch"] or 0) > epoch_at_kill else None

    wait_until("training again", training_again, JOB_TIMEOUT_S, detail)
    recovery_s = time.monotonic() - killed_at
    done = wait_until(
        "the job's end", lambda: (s := job())["status"] in TERMINAL and s, JOB_TIMEOUT_S, detail
    )
    return recovery_s, dict(done)
