"""Helpers for tests that run the service's real processes (uvicorn, Celery workers, ``gtcorrect serve``)."""

from __future__ import annotations

import subprocess
from pathlib import Path


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
    """Child process ids (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)
