"""Dependencies that fail and workers that die: 60 s outages of the object store and PostgreSQL, SIGKILL."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import select

from app.db.models import Annotation, CorrectedMask, Model, Sample, TrainingJob
from app.db.session import session_scope
from app.storage import make_store
from bench.attack.target import RECOVERY_S, ProxyProcess, Row, Target, png_bytes
from tests.durability.stack import (
    JOB_TIMEOUT_S,
    TERMINAL,
    long_config,
    recovery_after_kill,
    wait_until,
)
from tests.e2e.flow import upload_dataset
from tests.support.processes import children, embedded_serve, tail


@dataclass
class Probes:
    """What clients got during an outage."""

    answers: int = 0
    unavailable: int = 0  # 503 with Retry-After and the dependency named
    leaked: int = 0
    dropped: int = 0  # no answer: the connection failed

    def take(self, t: Target, call: Callable[[], httpx.Response]) -> httpx.Response | None:
        try:
            response = call()
        except httpx.TransportError:
            self.dropped += 1
            return None
        self.record(t, response)
        return response

    def record(self, t: Target, response: httpx.Response) -> None:
        self.answers += 1
        body = response.json() if response.status_code >= 400 else {}
        if response.status_code == 503 and response.headers.get("Retry-After") and body.get("dependency"):
            self.unavailable += 1
        self.leaked += bool(t.leaks(response))

    def all_unavailable(self) -> bool:
        return self.unavailable == self.answers > 0 and not self.leaked and not self.dropped

    def text(self) -> str:
        leaks = (
            f"{self.leaked} named an address, bucket or database" if self.leaked else "none named an address"
        )
        dropped = f", {self.dropped} connections dropped" if self.dropped else ""
        return f"{self.unavailable} of {self.answers} probes 503 + Retry-After{dropped}; {leaks}"


def _probe_during(t: Target, seconds: float, probe: Callable[[], httpx.Response]) -> Probes:
    probes = Probes()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        probes.take(t, probe)
        time.sleep(1.0)
    return probes


def _submit(t: Target, dataset: str, batch: str, seed_value: int) -> httpx.Response:
    """POST a job on ``batch`` with ``long_config(seed_value)``."""
    body = {"dataset_id": dataset, "batch_ids": [batch], "config": long_config(seed_value)}
    return t.stack.client.post("/v1/jobs", json=body)


def _finish(t: Target, job_id: str, since: float) -> str:
    done = wait_until(
        f"job {job_id} ending",
        lambda: (s := t.stack.job(job_id))["status"] in TERMINAL and s,
        JOB_TIMEOUT_S,
        t.stack.logs,
    )
    return (
        f"job {done['status']} (attempt {done['attempt']}) {time.monotonic() - since:.0f} s after the restore"
    )


def outages(t: Target, outage_s: float) -> list[Row]:
    client = t.stack.client
    dataset, batch, _ = upload_dataset(client, seed=11)
    sample = client.get(f"/v1/datasets/{dataset}/samples", params={"limit": 1}).json()["items"][0]["id"]
    if not any(proc.poll() is None for proc, _ in t.stack.workers):
        t.stack.start_worker()
    rows: list[Row] = []
    image = f"/v1/datasets/{dataset}/samples/{sample}/image"
    for number, (name, proxy) in enumerate((("object store", t.s3), ("PostgreSQL", t.pg))):
        probe = f"GET {image}" if proxy is t.s3 else "GET the job"
        rows.append(outage_while_training(t, name, proxy, probe, (dataset, batch, 20 + number), outage_s))
        rows.append(outage_while_submitting(t, name, proxy, (dataset, batch, 30 + number), outage_s))
    stray, missing = object_audit(t)
    rows.append(
        Row(
            "after the outages",
            "every object in the bucket against the database",
            f"{len(stray)} stray, {len(missing)} missing",
            ", ".join([*stray, *missing][:3]) or "-",
            "none",
            not stray and not missing,
        )
    )
    return rows


def outage_while_training(
    t: Target, name: str, proxy: ProxyProcess, probe: str, job: tuple[str, str, int], outage_s: float
) -> Row:
    """Cut ``proxy`` at epoch 2 of a job for ``outage_s``, calling ``probe`` (GET a path, or the job)
    every second; restore; wait for the job's end."""
    created = _submit(t, *job)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    path = probe.removeprefix("GET ") if probe.startswith("GET /") else f"/v1/jobs/{job_id}"
    wait_until("epoch 2", lambda: (t.stack.job(job_id)["epoch"] or 0) >= 2, JOB_TIMEOUT_S, t.stack.logs)
    proxy.cut()
    probes = _probe_during(t, outage_s, lambda: t.stack.client.get(path))
    proxy.restore()
    ended = _finish(t, job_id, time.monotonic())
    return Row(
        f"{name} outage while training",
        f"{name} cut for {outage_s:.0f} s at epoch >= 2; {probe} every second",
        ended,
        probes.text(),
        "job succeeds; 503 + Retry-After meanwhile",
        ended.startswith("job succeeded") and probes.all_unavailable(),
    )


def outage_while_submitting(
    t: Target, name: str, proxy: ProxyProcess, job: tuple[str, str, int], outage_s: float
) -> Row:
    """Cut ``proxy``; send an image upload, then POST the job every 2 s until it is accepted (a client
    honouring Retry-After, sooner); restore after ``outage_s``; wait for the job's end."""
    client, (dataset, _, _) = t.stack.client, job
    proxy.cut()
    cut_at = time.monotonic()
    restore = threading.Timer(outage_s, proxy.restore)
    restore.start()
    probes = Probes()
    png = png_bytes(np.zeros((32, 32, 3), dtype=np.uint8))
    upload = probes.take(
        t,
        lambda: client.post(
            f"/v1/datasets/{dataset}/images", files={"files": ("during.png", png, "image/png")}
        ),
    )
    while True:
        try:
            created = _submit(t, *job)
        except httpx.TransportError:
            probes.dropped += 1
        else:
            if created.status_code != 503:
                break
            probes.record(t, created)
        time.sleep(2.0)
    accepted_after = time.monotonic() - cut_at
    restore.join()
    ended = _finish(t, created.json()["id"], time.monotonic())
    stored = client.get(f"/v1/datasets/{dataset}/samples", params={"limit": 100}).json()["items"]
    kept = any(s["file_name"] == "during.png" for s in stored)
    return Row(
        f"{name} outage while submitting",
        f"{name} cut for {outage_s:.0f} s; an image upload, then POST /v1/jobs every 2 s until accepted",
        f"upload {upload.status_code if upload else 'dropped'}, {'stored!' if kept else 'nothing stored'}; "
        f"job {created.status_code} after {accepted_after:.0f} s; {ended}",
        probes.text(),
        "job succeeds; 503 + Retry-After meanwhile",
        ended.startswith("job succeeded") and not kept and probes.all_unavailable(),
    )


def object_audit(t: Target) -> tuple[list[str], list[str]]:
    """Objects no row refers to (a finished job's checkpoints included) and rows whose object is gone."""
    stored = set(make_store(t.direct).list())
    with session_scope(t.stack.factory) as session:
        referenced = set(session.scalars(select(Sample.object_key)))
        referenced |= set(session.scalars(select(Annotation.object_key)))
        referenced |= set(session.scalars(select(CorrectedMask.object_key)))
        referenced |= set(session.scalars(select(Model.weights_key)))
        jobs = {str(j.id): j for j in session.scalars(select(TrainingJob))}
        referenced |= {
            j.checkpoint_key for j in jobs.values() if j.checkpoint_key and j.status not in TERMINAL
        }
    plots = {k for k in stored if "/plots/" in k and k.split("/jobs/")[1].split("/")[0] in jobs}
    return sorted(stored - referenced - plots), sorted(referenced - stored)


def kill_production(t: Target) -> Row:
    dataset, batch, _ = upload_dataset(t.stack.client, seed=12)
    created = _submit(t, dataset, batch, 40)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    if not any(proc.poll() is None for proc, _ in t.stack.workers):
        t.stack.start_worker()

    def kill() -> None:
        for proc, _ in t.stack.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        t.stack.start_worker()

    recovery_s, done = recovery_after_kill(lambda: t.stack.job(job_id), kill, t.stack.logs)
    return _kill_row(
        "production worker",
        "prefork Celery worker (process group) SIGKILLed at epoch >= 2, a new one started",
        recovery_s,
        done,
    )


def kill_embedded(workdir: Path) -> Row:
    with embedded_serve(workdir) as served:
        client = httpx.Client(
            base_url=served.base_url, headers={"Authorization": f"Bearer {served.key}"}, timeout=30
        )
        dataset, batch, _ = upload_dataset(client, seed=13)
        body = {"dataset_id": dataset, "batch_ids": [batch], "config": long_config(13)}
        job_id = client.post("/v1/jobs", json=body).json()["id"]

        def kill() -> None:
            (worker,) = children(served.proc.pid)
            os.kill(worker, signal.SIGKILL)

        job = lambda: dict(client.get(f"/v1/jobs/{job_id}").json())  # noqa: E731
        recovery_s, done = recovery_after_kill(job, kill, lambda: tail(served.log))
        client.close()
    return _kill_row(
        "embedded worker", "`gtcorrect serve`'s worker process SIGKILLed at epoch >= 2", recovery_s, done
    )


def _kill_row(name: str, sent: str, recovery_s: float, done: dict[str, Any]) -> Row:
    return Row(
        f"{name} killed",
        sent,
        f"job {done['status']} (attempt {done['attempt']})",
        f"training again in {recovery_s:.1f} s",
        f"<= {RECOVERY_S:.0f} s, job succeeds",
        recovery_s <= RECOVERY_S and done["status"] == "succeeded",
    )
