"""The embedded worker's keeper, with real child processes: a killed worker is started again, a worker
that keeps dying is restarted ever more slowly, and stopping stops it for good."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import pytest

from app.supervisor import WorkerSupervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
CRASHER = [sys.executable, "-c", "raise SystemExit(3)"]


def _until(check: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_killed_worker_is_started_again_and_stop_ends_it() -> None:
    supervisor = WorkerSupervisor(SLEEPER, poll_s=0.05, backoff_s=0.1).start()
    try:
        first = supervisor.pid
        assert first is not None and supervisor.alive()
        supervisor.check()
        os.kill(first, signal.SIGKILL)
        _until(lambda: supervisor.pid != first and supervisor.alive())
        assert supervisor.restarts == 1
    finally:
        supervisor.stop()
    second = supervisor.pid
    assert second is not None and not supervisor.alive()
    time.sleep(0.3)
    assert supervisor.pid == second and supervisor.restarts == 1  # not restarted after stop


def test_a_worker_that_keeps_dying_is_restarted_ever_more_slowly() -> None:
    started: list[float] = []

    def popen(command: Sequence[str]) -> subprocess.Popen[bytes]:
        started.append(time.monotonic())
        return subprocess.Popen(command)

    supervisor = WorkerSupervisor(CRASHER, poll_s=0.02, backoff_s=0.1, max_backoff_s=0.4, popen=popen).start()
    try:
        _until(lambda: len(started) >= 5)
    finally:
        supervisor.stop()
    with pytest.raises(RuntimeError, match="not running"):  # what /readyz reports meanwhile
        supervisor.check()
    gaps = [b - a for a, b in zip(started, started[1:], strict=False)]
    # Each wait at least the backoff, doubling to the cap: 0.1, 0.2, 0.4, 0.4 (lower bounds: a slow machine
    # only makes the gaps longer).
    for gap, least in zip(gaps, [0.1, 0.2, 0.4, 0.4], strict=False):
        assert gap >= least, gaps
