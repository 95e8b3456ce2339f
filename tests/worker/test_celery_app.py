"""The Celery configuration that the job lifecycle relies on (docs/ARCHITECTURE.md, "Job lifecycle")."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from worker.celery_app import TRAIN_QUEUE, TRAIN_TASK, celery_config, make_celery


def test_redis_worker_acks_late_with_a_visibility_timeout_above_the_job(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/9", visibility_timeout_s=7200)
    config = celery_config(settings)
    assert config["broker_url"] == "redis://127.0.0.1:6379/9"
    assert config["broker_transport_options"] == {"visibility_timeout": 7200}
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1 and config["task_ignore_result"]
    assert config["task_routes"] == {TRAIN_TASK: {"queue": TRAIN_QUEUE}}


@pytest.mark.parametrize(("device", "per_child"), [("cuda", 1), ("cuda:1", 1), ("cpu", None)])
def test_gpu_workers_use_one_child_per_job(tmp_path: Path, device: str, per_child: int | None) -> None:
    config = celery_config(Settings(data_dir=tmp_path, device=device))
    assert config.get("worker_max_tasks_per_child") == per_child


def test_embedded_settings_use_the_filesystem_broker_and_register_the_task(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    app = make_celery(settings)
    assert app.conf.broker_url == "filesystem://"
    assert (settings.broker_dir / "queue").is_dir()
    app.loader.import_default_modules()
    assert TRAIN_TASK in app.tasks
