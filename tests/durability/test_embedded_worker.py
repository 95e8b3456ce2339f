"""``gtcorrect serve`` keeps its worker alive: SIGKILL the embedded worker mid-job (the OOM killer) and it
is started again, /metrics counts the restart, and the job resumes from its checkpoint and succeeds. A 5 s
stale heartbeat and a 1 s sweep keep it short; the time to recover at the default settings is measured by
the attack replay (``python -m bench.attack --cases kill``)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.durability.stack import long_config, recovery_after_kill, wait_until
from tests.e2e.flow import upload_dataset
from tests.support.processes import children, embedded_serve, tail

pytestmark = pytest.mark.integration


def test_a_killed_embedded_worker_is_restarted_and_its_job_resumes(tmp_path: Path) -> None:
    with embedded_serve(tmp_path, {"GTC_HEARTBEAT_STALE_S": "5", "GTC_SWEEP_INTERVAL_S": "1"}) as served:
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

        def kill_and_check_the_restart() -> None:
            (worker,) = children(served.proc.pid)
            os.kill(worker, signal.SIGKILL)
            restarted = wait_until(
                "a new worker", lambda: [p for p in children(served.proc.pid) if p != worker], 30, logs
            )
            assert len(restarted) == 1
            metrics = client.get("/metrics").text
            assert "gtc_embedded_worker_restarts_total 1.0" in metrics
            assert "gtc_embedded_worker_up 1.0" in metrics
            assert client.get("/readyz").json()["checks"]["worker"] == "ok"

        recovery_s, done = recovery_after_kill(job, kill_and_check_the_restart, logs)
        print(f"\nembedded worker SIGKILLed: training again in {recovery_s:.1f} s")
        assert done["status"] == "succeeded" and done["attempt"] == 2, done
