"""An annotation-batch upload cut off midway (the client's socket closes after half the declared body):
no batch, no annotation row and no object may remain, and the server keeps answering.

A real uvicorn serves the app on loopback; the upload is written by hand on a raw socket so the test
controls exactly where the body stops.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Annotation, AnnotationBatch
from app.db.session import session_scope
from app.main import create_app
from app.services.projects import create_project
from app.settings import Settings
from app.storage import make_store
from tests.api.conftest import files_part, image_png, mask_png
from tests.durability.stack import wait_until
from tests.support.s3server import free_ports

pytestmark = pytest.mark.integration

N_FILES = 8
BOUNDARY = "gtcorrect-cut-upload-boundary"


@dataclass(frozen=True)
class LiveServer:
    server: uvicorn.Server
    port: int

    def idle(self) -> bool:
        """The server holds no connection and runs no request: it has finished with the cut upload."""
        state = self.server.server_state
        return not state.connections and not state.tasks


@pytest.fixture
def live(settings: Settings, db_session_factory: sessionmaker[Session]) -> Iterator[LiveServer]:
    (port,) = free_ports(1)
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until("uvicorn start", lambda: server.started, 60.0, lambda: "server.started stayed False")
    yield LiveServer(server, port)
    server.should_exit = True
    thread.join(timeout=30)


def _multipart(files: dict[str, bytes]) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="annotator"\r\n\r\nvendor-x\r\n'.encode()]
    for name, data in files.items():
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


def _send_half(port: int, path: str, key: str, body: bytes) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode() + body[: len(body) // 2])
        time.sleep(0.5)  # let the server read and parse the first half before the client vanishes


def _count(factory: sessionmaker[Session], model: type[AnnotationBatch] | type[Annotation]) -> int:
    with session_scope(factory) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_cut_off_annotation_upload_leaves_nothing(
    live: LiveServer, settings: Settings, db_session_factory: sessionmaker[Session]
) -> None:
    with session_scope(db_session_factory) as session:
        project, key = create_project(session, "cut")
        project_id = project.id
    base = f"http://127.0.0.1:{live.port}"
    names = [f"img{i}.png" for i in range(N_FILES)]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        dataset = client.post("/v1/datasets", json={"name": "d"}).json()["id"]
        images = {n: image_png(64, 64, i) for i, n in enumerate(names)}
        assert client.post(f"/v1/datasets/{dataset}/images", files=files_part(images)).status_code == 201
        masks = {n: mask_png(64, 64) for n in names}
        path = f"/v1/datasets/{dataset}/annotation-batches"

        _send_half(live.port, path, key, _multipart(masks))
        wait_until("the server finishing the cut request", live.idle, 60.0, lambda: "requests still open")

        assert (_count(db_session_factory, AnnotationBatch), _count(db_session_factory, Annotation)) == (0, 0)
        store = make_store(settings)
        assert list(store.list(f"{project_id}/datasets/{dataset}/annotations/")) == []
        assert client.get("/livez").status_code == 200
        # The same upload, whole this time, goes through: the cut one left nothing in its way.
        whole = client.post(path, data={"annotator": "vendor-x"}, files=files_part(masks))
        assert whole.status_code == 201, whole.text
    assert (_count(db_session_factory, AnnotationBatch), _count(db_session_factory, Annotation)) == (
        1,
        N_FILES,
    )
