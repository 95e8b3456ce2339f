"""Helpers for tests that run the service's real processes (uvicorn, Celery workers, ``gtcorrect serve``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

START_TIMEOUT_S = 90.0


def quiet_env(env: dict[str, str]) -> dict[str, str]:
    # One torch thread per process: 2 shared cores run the API, the worker and the S3 server.
    return {
        **env,
        "OMP_NUM_THREADS": "1",
        "MALLOC_MMAP_THRESHOLD_": "4294967296",
        "MALLOC_TRIM_THRESHOLD_": "17179869184",
        "PYTHONUNBUFFERED": "1",
    }


def tail(log: Path, lines: int = 40) -> str:
    """The last lines of a process log, for failure messages."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def children(pid: int) -> list[int]:
    """Child process ids (Linux /proc), of every thread of ``pid`` (each thread lists the children it
    started: ``gtcorrect serve`` restarts its worker from a thread)."""
    found: list[int] = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread ended meanwhile
            continue
    return sorted(found)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


def start_logged(
    cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)


def stop_logged(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def wait_ready(base_url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
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


def serve_command() -> list[str]:
    script = Path(sys.executable).parent / "gtcorrect"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "app.cli"]


def client_cli(
    env: dict[str, str], cwd: Path, timeout_s: float = 600
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli(*args)``: runs ``gtcorrect client ARGS`` with ``env`` in ``cwd`` and returns what it did."""

    def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*serve_command(), "client", *map(str, args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=cwd,
        )

    return cli


@dataclass
class Served:
    """A running ``gtcorrect serve``: its URL, the key it wrote, its data folder, environment, log and
    process; ``exit_code`` is set once it has been stopped."""

    base_url: str
    key: str
    data_dir: Path
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes]
    exit_code: int | None = None


@contextmanager
def embedded_serve(tmp_path: Path, settings: dict[str, str] | None = None) -> Iterator[Served]:
    """A fresh ``gtcorrect serve`` (embedded mode, no GTC_* settings but its data folder and ``settings``)
    on a free port, ready; stopped with SIGTERM afterwards, with the tail of its log printed."""
    from tests.support.s3server import free_ports  # that module starts processes with this one's helpers

    data_dir = tmp_path / "gtc-data"
    env = quiet_env({k: v for k, v in os.environ.items() if not k.startswith("GTC_")})
    env["GTC_DATA_DIR"] = str(data_dir)
    env["GTC_CONFIG_DIR"] = str(tmp_path / "user-config")  # the per-user key file, not the real home's
    env.update(settings or {})
    (port,) = free_ports(1)
    log = tmp_path / "serve.log"
    proc = start_logged([*serve_command(), "serve", "--port", str(port)], env, log, cwd=tmp_path)
    base_url = f"http://127.0.0.1:{port}"
    served: Served | None = None
    try:
        wait_ready(base_url, proc, log)
        served = Served(base_url, (data_dir / "api_key").read_text().strip(), data_dir, env, log, proc)
        yield served
    finally:
        code = stop_logged(proc, signal.SIGTERM)
        if served is not None:
            served.exit_code = code
        print(f"--- serve log ---\n{tail(log)}")
