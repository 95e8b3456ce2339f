"""A worker killed mid-job (SIGKILL: the OOM killer, a lost machine) and a user's cancel, with real
processes: uvicorn with its sweeper, prefork Celery workers, PostgreSQL, Redis and S3.

The killed job must resume from its last checkpoint on a live worker (its epoch counter continues, its
attempt goes up) and succeed; nothing may stay ``running``. A cancelled job ends ``cancelled`` within one
epoch and registers no model.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import JobStatus, Model, TrainingJob
from app.db.session import session_scope
from app.settings import Settings
from app.storage import make_store
from tests.durability.stack import (
    JOB_TIMEOUT_S,
    TERMINAL,
    Stack,
    long_config,
    run_stack,
    wait_until,
)
from tests.e2e.flow import upload_dataset
from tests.support.processes import children

pytestmark = pytest.mark.integration

STALE_S = 5


@pytest.fixture
def stack(settings: Settings, tmp_path: Path, db_session_factory: sessionmaker[Session]) -> Iterator[Stack]:
    # A 5 s stale heartbeat and a 1 s sweep keep the test short; the logic is the production one.
    fast = settings.model_copy(
        update={"heartbeat_stale_s": STALE_S, "sweep_interval_s": 1.0, "queued_resend_s": 120}
    )
    yield from run_stack(fast, tmp_path, db_session_factory)


def _start_job(stack: Stack, seed: int) -> str:
    dataset_id, batch_id, _ = upload_dataset(stack.client, seed)
    created = stack.client.post(
        "/v1/jobs", json={"dataset_id": dataset_id, "batch_ids": [batch_id], "config": long_config(seed)}
    )
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


def _reaches_epoch(stack: Stack, job_id: str, epoch: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job = stack.job(job_id)
        assert job["status"] not in TERMINAL, f"job ended early: {job}"
        return job if (job["epoch"] or 0) >= epoch else None

    return dict(wait_until(f"job {job_id} epoch {epoch}", check, JOB_TIMEOUT_S, stack.logs))


def _finish(stack: Stack, job_id: str, seen: list[tuple[int, int]]) -> dict[str, Any]:
    """Poll to a terminal status, recording every (attempt, epoch) seen on the way."""

    def check() -> dict[str, Any] | None:
        job = stack.job(job_id)
        seen.append((job["attempt"], job["epoch"] or 0))
        return job if job["status"] in TERMINAL else None

    return dict(wait_until(f"job {job_id} finishing", check, JOB_TIMEOUT_S, stack.logs))


def _checkpoint_epoch(key: str | None) -> int:
    match = re.search(r"/checkpoints/(\d+)\.pt$", key or "")
    assert match, f"not a checkpoint key: {key!r}"
    return int(match.group(1))


def _row_with_stored_checkpoint(stack: Stack, job_id: str, min_epoch: int = 1) -> TrainingJob:
    """The job row, once its checkpoint key names an object that is in the store, of epoch ``min_epoch``
    or later (progress reports an epoch before its checkpoint is recorded).

    The worker stores checkpoint N+1, points the row at it, then deletes N; reading the row and then
    listing can straddle that step, so the row is read again and the check made on a stable pair.
    """
    store = make_store(stack.settings)

    def check() -> TrainingJob | None:
        before = stack.row(job_id)
        stored = list(store.list(f"{before.project_id}/jobs/{job_id}/checkpoints/"))
        after = stack.row(job_id)
        if before.checkpoint_key != after.checkpoint_key or after.checkpoint_key is None:
            return None  # a new checkpoint landed in between (or none yet): look again
        if _checkpoint_epoch(after.checkpoint_key) < min_epoch:
            return None
        assert after.checkpoint_key in stored, (after.checkpoint_key, stored)
        return after

    return wait_until(f"job {job_id} stable checkpoint", check, JOB_TIMEOUT_S, stack.logs)


def _nothing_running(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        running = session.scalar(select(func.count()).where(TrainingJob.status == JobStatus.running))
    assert running == 0


@pytest.mark.parametrize("victim", ["whole worker", "pool child"])
def test_killed_worker_resumes_from_the_checkpoint(stack: Stack, victim: str) -> None:
    job_id = _start_job(stack, seed=3)
    first = stack.start_worker()
    _reaches_epoch(stack, job_id, 2)

    # Item 1: a heartbeat and a checkpoint object every epoch, before any fault.
    row = _row_with_stored_checkpoint(stack, job_id, min_epoch=2)
    assert row.heartbeat_at is not None and row.attempt == 1

    if victim == "whole worker":
        os.killpg(first.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        first.wait(timeout=30)
    else:
        (child,) = children(first.pid)
        os.kill(child, signal.SIGKILL)  # reject_on_worker_lost: the message is redelivered at once
        killed_at = time.monotonic()
    dead = stack.row(job_id)
    assert dead.status is JobStatus.running and dead.attempt == 1
    resumed_from = _checkpoint_epoch(dead.checkpoint_key)
    assert resumed_from >= 2, dead.checkpoint_key
    total = stack.job(job_id)["total_epochs"]
    assert resumed_from < total, f"killed after the last epoch ({resumed_from} of {total}): nothing to resume"
    if victim == "whole worker":
        stack.start_worker()  # its redelivery would take the 12 h visibility timeout: the sweeper acts

    # Running again: attempt 2 has trained an epoch past the checkpoint (its progress row says so).
    def resumed() -> dict[str, Any] | None:
        job = stack.job(job_id)
        return job if job["attempt"] == 2 and (job["epoch"] or 0) > resumed_from else None

    wait_until(f"job {job_id} training again", resumed, JOB_TIMEOUT_S, stack.logs)
    recovery_s = time.monotonic() - killed_at
    print(f"\nrecovery [{victim}]: kill -> training past checkpoint {resumed_from} in {recovery_s:.1f} s")

    seen: list[tuple[int, int]] = []
    job = _finish(stack, job_id, seen)
    assert job["status"] == "succeeded", f"{job}\n{stack.logs()}"
    assert job["attempt"] == 2 and job["epoch"] > resumed_from
    # The second attempt started from the checkpoint, not from epoch 1.
    log = stack.worker_log(-1)
    assert f"job {job_id} attempt 2 resumes from {dead.checkpoint_key}" in log, log[-3000:]
    assert min(epoch for attempt, epoch in seen if attempt == 2) >= resumed_from, seen
    _nothing_running(stack.factory)


def test_cancel_stops_within_one_epoch_and_registers_no_model(stack: Stack) -> None:
    job_id = _start_job(stack, seed=4)
    stack.start_worker()
    _reaches_epoch(stack, job_id, 2)
    cancelled = stack.client.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    at_cancel = cancelled.json()
    assert at_cancel["cancel_requested"] is True and at_cancel["status"] == "running", at_cancel

    job = _finish(stack, job_id, [])
    assert job["status"] == "cancelled", job
    assert job["epoch"] <= at_cancel["epoch"] + 1, (at_cancel["epoch"], job["epoch"])
    assert job["epoch"] < job["total_epochs"], "the job ran to the end instead of stopping"
    with session_scope(stack.factory) as session:
        models = session.scalar(select(func.count()).select_from(Model).where(Model.job_id == job["id"]))
    assert models == 0
    assert stack.client.get("/v1/models").json()["total"] == 0
    _nothing_running(stack.factory)
