"""The Celery application that runs training jobs (``celery -A worker.celery_app worker -Q train``).

Built from ``get_settings()``: Redis in production, kombu's filesystem transport in the embedded mode.
Postgres (or SQLite) holds every job's status, so there is no result backend. Each setting below says
why it is set, in the manner of kitware-resonant's ``composed_configuration/_celery.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from celery import Celery
from celery.signals import after_setup_logger

from app.logs import configure_logging
from app.settings import Settings, get_settings

TRAIN_QUEUE = "train"
TRAIN_TASK = "gtcorrect.train"


def _uses_gpu(settings: Settings) -> bool:
    if settings.device == "cpu":
        return False
    return settings.device.startswith("cuda") or torch.cuda.is_available()


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for ``settings``; a function so tests can inspect it."""
    config: dict[str, Any] = {
        "broker_url": settings.resolved_broker_url(),
        # For Redis this carries visibility_timeout = settings.visibility_timeout_s: an unacked task is
        # redelivered after it, so it must exceed the longest job or a healthy job would run twice.
        # For the filesystem broker it names the shared queue folders.
        "broker_transport_options": settings.broker_transport_options(),
        # Acknowledge only after the task returns: a worker that dies mid-job leaves the message to be
        # redelivered, and the runner's heartbeat check decides whether to resume it.
        "task_acks_late": True,
        # A pool child killed by the OOM killer or SIGKILL must not count as "done"; requeue instead.
        "task_reject_on_worker_lost": True,
        # Jobs last minutes to hours; a worker must not hoard queued jobs that idle workers could take.
        "worker_prefetch_multiplier": 1,
        # Postgres holds the status, progress and results; a result backend would be a second truth.
        "task_ignore_result": True,
        "result_backend": None,
        # The API only enqueues "gtcorrect.train" by name; route it to the queue the GPU workers consume.
        "task_routes": {TRAIN_TASK: {"queue": TRAIN_QUEUE}},
        "task_default_queue": TRAIN_QUEUE,
        # Compose starts the worker next to Redis; retry instead of crashing while the broker comes up.
        "broker_connection_retry_on_startup": True,
        # JSON only: task arguments are ids, and pickle would execute whatever lands in the queue.
        "task_serializer": "json",
        "accept_content": ["json"],
    }
    if _uses_gpu(settings):
        # A fresh child per job hands all GPU memory (CUDA context, allocator cache) back to the driver.
        config["worker_max_tasks_per_child"] = 1
    return config


def make_celery(settings: Settings | None = None) -> Celery:
    """A Celery app for ``settings``; None reads ``get_settings()`` when the configuration is first used,
    so importing this module (the worker, the tests) neither reads the environment nor creates folders."""
    app = Celery("gtcorrect", include=["worker.tasks"])  # the worker imports the task module by name
    app.add_defaults(lambda: celery_config(settings if settings is not None else get_settings()))
    return app


celery_app = make_celery()


@after_setup_logger.connect
def _structured_logs(**_kwargs: Any) -> None:
    """``GTC_LOG_FORMAT=json``: once Celery has set up its logging, every record goes out as JSON."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
