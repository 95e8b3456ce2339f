"""Celery tasks: thin views, ids in, logic in ``worker.runner`` (safe to run twice)."""

from __future__ import annotations

import uuid
from functools import lru_cache

from app.settings import get_settings
from worker.celery_app import TRAIN_TASK, celery_app
from worker.runner import RunnerContext, run_job


@lru_cache(maxsize=1)
def _context() -> RunnerContext:
    # One engine and store per worker process, built on first use (after the pool forks).
    return RunnerContext.from_settings(get_settings())


@celery_app.task(name=TRAIN_TASK)
def train(job_id: str) -> None:
    """Run training job ``job_id``; the job row in the database records the outcome."""
    run_job(uuid.UUID(job_id), _context())
