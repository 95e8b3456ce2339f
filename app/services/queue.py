"""The queue port: the API sends tasks by name and never imports the worker (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from celery import Celery
from kombu.exceptions import ChannelError

TRAIN_TASK = "gtcorrect.train"
TRAIN_QUEUE = "train"


class QueueError(RuntimeError):
    """The broker could not take the message."""


class TaskQueue(Protocol):
    def send_train(self, job_id: uuid.UUID) -> None:
        """Ask a worker to run training job ``job_id``; raise ``QueueError`` if the broker refuses."""

    def ping(self) -> None:
        """Raise if the broker cannot be reached (``/readyz``)."""

    def depth(self) -> int:
        """Training tasks waiting in the broker (``/metrics``); raise if it cannot be reached."""

    def close(self) -> None: ...


class CeleryQueue:
    """A client-only Celery app: it knows task names, not task code."""

    def __init__(self, broker_url: str, transport_options: dict[str, Any] | None = None) -> None:
        self._app = Celery("gtcorrect-api", broker=broker_url, set_as_current=False)
        self._app.conf.broker_transport_options = transport_options or {}
        # Fail fast instead of retrying for minutes while the request waits.
        self._app.conf.broker_connection_retry = False
        self._app.conf.broker_connection_timeout = 5
        self._app.conf.task_publish_retry_policy = {
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
        }

    def send_train(self, job_id: uuid.UUID) -> None:
        try:
            self._app.send_task(TRAIN_TASK, args=[str(job_id)], queue=TRAIN_QUEUE)
        except Exception as exc:  # kombu raises OperationalError and friends
            raise QueueError(f"could not send job {job_id} to the broker: {exc}") from exc

    def ping(self) -> None:
        with self._app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)

    def depth(self) -> int:
        with self._app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
            try:
                declared = conn.default_channel.queue_declare(queue=TRAIN_QUEUE, passive=True)
            except ChannelError:  # Redis keeps no empty lists: a queue with nothing waiting is "not found"
                return 0
            return int(declared.message_count)

    def close(self) -> None:
        self._app.close()
