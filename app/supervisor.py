"""The embedded worker's keeper: ``gtcorrect serve`` runs its Celery worker as a child process and
restarts it when it dies (killed by the OOM killer, a crash), so jobs keep running without anyone
watching. ``/readyz`` and ``/metrics`` report it (``app.api.health``, ``app.api.metrics``).

A job the dead worker was training stays ``running`` until its heartbeat is stale; the API's sweeper then
sends it again and the new worker resumes it from its last checkpoint (docs/RELIABILITY.md).
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)


class WorkerSupervisor:
    """Starts ``command`` and starts it again whenever it exits on its own. Restarts wait ``backoff_s``,
    doubling up to ``max_backoff_s`` while the worker keeps dying within ``stable_s`` of its start (a
    worker that cannot start does not spin)."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        poll_s: float = 1.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stable_s: float = 60.0,
        stop_timeout_s: float = 20.0,
        popen: Callable[[Sequence[str]], subprocess.Popen[bytes]] = subprocess.Popen,
    ) -> None:
        self.command = list(command)
        self.poll_s, self.backoff_s, self.max_backoff_s = poll_s, backoff_s, max_backoff_s
        self.stable_s = stable_s
        self.stop_timeout_s = stop_timeout_s
        self._popen = popen
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        with self._lock:
            return None if self._proc is None else self._proc.pid

    def alive(self) -> bool:
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    def check(self) -> None:
        """For readiness: raises when no worker is running right now."""
        if not self.alive():
            raise RuntimeError("the embedded worker is not running (it is being restarted)")

    def start(self) -> WorkerSupervisor:
        self._spawn()
        self._thread.start()
        return self

    def _spawn(self) -> None:
        with self._lock:
            self._proc = self._popen(self.command)
            self._started_at = time.monotonic()

    def _watch(self) -> None:
        wait = self.backoff_s
        while not self._stopping.wait(self.poll_s):
            with self._lock:
                proc, started = self._proc, self._started_at
            code = None if proc is None else proc.poll()
            if code is None:
                continue
            lived = time.monotonic() - started
            wait = self.backoff_s if lived >= self.stable_s else wait
            log.warning(
                "the embedded worker exited (code %s) after %.0f s; restarting in %.0f s", code, lived, wait
            )
            if self._stopping.wait(wait):
                return
            self._spawn()
            self.restarts += 1
            log.info("the embedded worker runs again (pid %s, restart %d)", self.pid, self.restarts)
            wait = min(wait * 2, self.max_backoff_s)

    def stop(self) -> None:
        """Stop watching, then stop the worker (Celery's warm shutdown; killed after ``stop_timeout_s``)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
