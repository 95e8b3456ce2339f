"""A dependency's outage during a job, through a proxy cut in front of the real S3 server or PostgreSQL:
a short one is waited out and the job succeeds; a longer one gives the job back to the queue with its
checkpoint, and the next start resumes it."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import JobStatus, TrainingJob
from app.db.session import make_engine, make_session_factory, session_scope
from app.services.jobstate import DISPATCH_KEY, DISPATCH_PENDING
from app.settings import Settings
from app.storage import keys, make_store
from tests.support.proxy import Proxy, proxied_store
from tests.worker.seed import Seeded, seed_job, tiny_config
from tests.worker.synthetic import make_set
from tests.worker.test_runner import HookedStore
from worker.runner import RunnerContext, run_job

pytestmark = pytest.mark.integration

Factory = sessionmaker[Session]


def _outage(proxy: Proxy, seconds: float | None) -> None:
    """Cut now; restore after ``seconds`` (None: stays cut)."""
    proxy.cut()
    if seconds is not None:
        threading.Timer(seconds, proxy.restore).start()


def _job(factory: Factory, seeded: Seeded) -> TrainingJob:
    with session_scope(factory) as session:
        job = session.get(TrainingJob, seeded.job_id)
        assert job is not None
        return job


@pytest.fixture
def seeded(settings: Settings, db_session_factory: Factory) -> Seeded:
    return seed_job(db_session_factory, make_store(settings), make_set(8, 2, seed=1), tiny_config())


def test_a_short_object_store_outage_is_waited_out(
    settings: Settings, db_session_factory: Factory, s3_proxy: Proxy, seeded: Seeded
) -> None:
    store = HookedStore(proxied_store(settings, s3_proxy, retry_s=30), 2, lambda: _outage(s3_proxy, 2.0))
    ctx = RunnerContext(settings.model_copy(update={"worker_retry_s": 30}), db_session_factory, store, 0.0)
    assert run_job(seeded.job_id, ctx) is JobStatus.succeeded
    job = _job(db_session_factory, seeded)
    assert job.attempt == 1 and job.error is None


def test_a_long_object_store_outage_gives_the_job_back_and_it_resumes(
    settings: Settings, db_session_factory: Factory, s3_proxy: Proxy, seeded: Seeded
) -> None:
    cut_at = 3
    store = HookedStore(
        proxied_store(settings, s3_proxy, retry_s=1.0), cut_at, lambda: _outage(s3_proxy, None)
    )
    ctx = RunnerContext(settings.model_copy(update={"worker_retry_s": 1.0}), db_session_factory, store, 0.0)
    assert run_job(seeded.job_id, ctx) is None  # not terminal: given back

    job = _job(db_session_factory, seeded)
    assert job.status is JobStatus.queued and job.attempt == 1 and job.error is None
    assert job.checkpoint_key == store.checkpoints[cut_at - 2]  # the last one written is kept
    assert job.progress[DISPATCH_KEY] == DISPATCH_PENDING  # the sweeper sends it again
    reason = job.progress["dispatch_error"]
    assert "object store was unavailable" in reason
    assert s3_proxy.endpoint not in reason and settings.s3_bucket not in reason

    s3_proxy.restore()
    resumed = HookedStore(make_store(settings), 0, lambda: None)
    assert run_job(seeded.job_id, RunnerContext(settings, db_session_factory, resumed, 0.0)) is (
        JobStatus.succeeded
    )
    job = _job(db_session_factory, seeded)
    assert job.attempt == 2  # the outage's start counts against max_attempts
    # It resumed where it was given back: the first checkpoint is the one the outage stopped.
    assert resumed.checkpoints[0] == keys.checkpoint(seeded.project_id, seeded.job_id, cut_at)
    leftovers = list(make_store(settings).list(keys.job_prefix(seeded.project_id, seeded.job_id)))
    assert not [k for k in leftovers if "/checkpoints/" in k]


def test_a_short_database_outage_is_waited_out(
    settings: Settings, db_session_factory: Factory, seeded: Seeded
) -> None:
    url = make_url(settings.resolved_database_url())
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    engine = make_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    try:
        store = HookedStore(make_store(settings), 2, lambda: _outage(proxy, 2.0))
        ctx = RunnerContext(
            settings.model_copy(update={"worker_retry_s": 30}), make_session_factory(engine), store, 0.0
        )
        assert run_job(seeded.job_id, ctx) is JobStatus.succeeded
        job = _job(db_session_factory, seeded)
        assert job.attempt == 1 and job.error is None
    finally:
        engine.dispose()
        proxy.close()
