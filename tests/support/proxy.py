"""A TCP proxy on loopback that tests cut and restore: a dependency's outage without stopping the server.

``cut()`` closes every open connection and refuses new ones (what a client sees when the server's host
goes away and comes back); ``restore()`` accepts again. Threads only, no dependencies.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.settings import Settings
    from app.storage.s3 import S3Store


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._up = True
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        with self._lock:
            self._up = False
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self._up = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                up = self._up
            if not up:
                client.close()  # refused: the connection opens, then drops before any answer
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:  # either side gone: the pair is done (neither HTTP nor PostgreSQL half-closes)
            with self._lock:
                for sock in (source, sink):
                    self._open.discard(sock)
                    sock.close()


@contextlib.contextmanager
def proxy_to_s3(settings: Settings) -> Iterator[Proxy]:
    """A proxy in front of the S3 server ``settings`` name."""
    host, port = settings.s3_endpoint.rsplit(":", 1)
    proxy = Proxy(host, int(port))
    try:
        yield proxy
    finally:
        proxy.close()


def proxied_store(settings: Settings, proxy: Proxy, retry_s: float) -> S3Store:
    """The settings' bucket reached through ``proxy``, waiting out outages for ``retry_s``."""
    from app.storage.s3 import S3Store

    return S3Store(
        proxy.endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket, retry_s=retry_s
    )


def main() -> None:
    """``python -m tests.support.proxy HOST:PORT``: a proxy in a process of its own (so a benchmark's own
    threads do not slow the traffic it carries); prints its port, then SIGUSR1 cuts, SIGUSR2 restores,
    SIGTERM ends it."""
    import signal
    import sys

    host, port = sys.argv[1].rsplit(":", 1)
    proxy = Proxy(host, int(port))
    signal.signal(signal.SIGUSR1, lambda *_: proxy.cut())
    signal.signal(signal.SIGUSR2, lambda *_: proxy.restore())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(proxy.port, flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
