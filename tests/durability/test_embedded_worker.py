"""``gtcorrect serve`` keeps its worker alive: SIGKILL the embedded worker mid-job (the OOM killer) and it
is started again, /metrics counts the restart, and the job resumes from its checkpoint and succeeds, at
the default heartbeat and sweep settings."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.durability.stack import wait_until
from tests.durability.test_worker_killed import JOB_TIMEOUT_S, RECOVERY_TARGET_S, TERMINAL, long_config
from tests.e2e.flow import upload_dataset
from tests.support.processes import children, embedded_serve, tail

pytestmark = pytest.mark.integration


def test_a_killed_embedded_worker_is_restarted_and_its_job_resumes(tmp_path: Path) -> None:
    with embedded_serve(tmp_path) as served:
        logs = lambda: tail(served.log)  # noqa: E731
        client = httpx.Client(
            base_url=served.base_url, headers={"Authorization": f"Bearer {served.key}"}, timeout=30
        )
        dataset_id, batch_id, _ = upload_dataset(client, seed=5)
        body = {"dataset_id": dataset_id, "batch_ids": [batch_id], "config": long_config(5)}
        created = client.post("/v1/jobs", json=body)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]

        def job() -> dict[str, Any]:
            got = client.get(f"/v1/jobs/{job_id}")
            assert got.status_code == 200, got.text
            return dict(got.json())

        def at_epoch_2() -> dict[str, Any] | None:
            state = job()
            assert state["status"] not in TERMINAL, state
            return state if (state["epoch"] or 0) >= 2 else None

        wait_until("epoch 2", at_epoch_2, JOB_TIMEOUT_S, logs)
        (worker,) = children(served.proc.pid)
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        epoch_at_kill = job()["epoch"]

        restarted = wait_until(
            "a new worker", lambda: [p for p in children(served.proc.pid) if p != worker], 30, logs
        )
        assert len(restarted) == 1
        metrics = client.get("/metrics").text
        assert "gtc_embedded_worker_restarts_total 1.0" in metrics and "gtc_embedded_worker_up 1.0" in metrics
        assert client.get("/readyz").json()["checks"]["worker"] == "ok"

        def training_again() -> dict[str, Any] | None:
            state = job()
            return state if state["attempt"] == 2 and (state["epoch"] or 0) > epoch_at_kill else None

        wait_until("training again", training_again, JOB_TIMEOUT_S, logs)
        recovery_s = time.monotonic() - killed_at
        print(f"\nembedded worker SIGKILLed: training again past epoch {epoch_at_kill} in {recovery_s:.1f} s")
        assert recovery_s < RECOVERY_TARGET_S, recovery_s

        done = wait_until(
            "the job's end", lambda: (s := job())["status"] in TERMINAL and s, JOB_TIMEOUT_S, logs
        )
        assert done["status"] == "succeeded" and done["attempt"] == 2, done
