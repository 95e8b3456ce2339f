"""The production stack under attack, with its dependencies behind proxies that cut and restore."""

from __future__ import annotations

import contextlib
import io
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from sqlalchemy import make_url

from app.db.session import make_engine, make_session_factory
from app.settings import Settings
from bench.load_setup import services
from tests.durability.stack import (
    Stack,
    run_stack,
)

OUT_DIR = Path(__file__).resolve().parents[1] / "out"  # bench/out, beside the other benchmarks
RELIABILITY = Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md"
CASES = ("bodies", "neighbour", "decode", "mistakes", "outages", "kill")
MB = 2**20

# The targets (#23, "Done when").
BODY_GROWTH_MB = 50.0
LIVEZ_P99_MS = 100.0
THROUGHPUT_KEPT = 0.8
DECODE_PEAK_MB = 600.0
DECODE_BACK_MB = 200.0
RECOVERY_S = 90.0


@dataclass(frozen=True)
class Row:
    case: str
    sent: str  # what the attack did
    answer: str  # what the service did
    figure: str  # the measured figure
    target: str
    met: bool


class ProxyProcess:
    """``tests.support.proxy`` in its own process: ``cut()`` and ``restore()`` by signal."""

    def __init__(self, target: str) -> None:
        command = [sys.executable, "-m", "tests.support.proxy", target]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)

    def restore(self) -> None:
        self.proc.send_signal(signal.SIGUSR2)
        time.sleep(0.2)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@dataclass
class Target:
    """The stack under attack: ``stack`` talks through the proxies, ``direct`` reads the truth."""

    stack: Stack
    direct: Settings
    s3: ProxyProcess
    pg: ProxyProcess
    secrets: tuple[str, ...]  # what no client may see: addresses, bucket, database name

    @property
    def pid(self) -> int:
        return self.stack.api.pid

    def leaks(self, response: httpx.Response) -> list[str]:
        return [s for s in self.secrets if s and s in response.text]


@contextlib.contextmanager
def target(workdir: Path) -> Iterator[Target]:
    with services(workdir) as direct:
        pg_url = make_url(direct.resolved_database_url())
        s3, pg = ProxyProcess(direct.s3_endpoint), ProxyProcess(f"{pg_url.host}:{pg_url.port or 5432}")
        proxied_url = pg_url.set(host="127.0.0.1", port=pg.port).render_as_string(hide_password=False)
        proxied = direct.model_copy(update={"s3_endpoint": s3.endpoint, "database_url": proxied_url})
        engine = make_engine(direct.resolved_database_url())
        try:
            stacks = contextlib.contextmanager(run_stack)(proxied, workdir, make_session_factory(engine))
            with stacks as stack:
                secrets = (direct.s3_endpoint, s3.endpoint, direct.s3_bucket, str(pg_url.database))
                yield Target(stack, direct, s3, pg, (*secrets, f":{pg.port}", f":{pg_url.port or 5432}"))
        finally:
            engine.dispose()
            s3.close()
            pg.close()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
