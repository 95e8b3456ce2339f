"""The sweeper's decisions on real job rows (embedded SQLite): what it sends, what it leaves, what it fails.

The queue is a recording fake of the ``TaskQueue`` port (a real broker is used in test_broker_outage.py
and test_worker_killed.py); it can be switched to refusing, as a broker that is down does.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Dataset, JobStatus, Project, TrainingJob, utcnow
from app.db.session import make_engine, make_session_factory, session_scope
from app.services.jobstate import mark_pending
from app.services.queue import QueueError
from app.services.sweeper import Sweeper, SweepPolicy
from app.settings import Settings

POLICY = SweepPolicy(heartbeat_stale_s=60, queued_resend_s=300, max_attempts=3)


class RecordingQueue:
    """Remembers what was sent; ``down`` makes it refuse like an unreachable broker."""

    def __init__(self) -> None:
        self.sent: list[uuid.UUID] = []
        self.down = False

    def send_train(self, job_id: uuid.UUID) -> None:
        if self.down:
            raise QueueError(f"could not send job {job_id} to the broker: connection refused")
        self.sent.append(job_id)

    def ping(self) -> None:
        if self.down:
            raise QueueError("connection refused")

    def depth(self) -> int:
        self.ping()
        return len(self.sent)

    def close(self) -> None:
        pass


@pytest.fixture
def factory(embedded_settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(make_engine(embedded_settings.resolved_database_url()))


def _add_jobs(factory: sessionmaker[Session], specs: dict[str, dict[str, Any]]) -> dict[str, uuid.UUID]:
    with session_scope(factory) as session:
        project = Project(name=f"p-{uuid.uuid4().hex[:6]}")
        session.add(project)
        session.flush()
        dataset = Dataset(project_id=project.id, name="d", label_map={"0": "background", "1": "fg"})
        session.add(dataset)
        session.flush()
        ids = {}
        for name, fields in specs.items():
            job = TrainingJob(project_id=project.id, dataset_id=dataset.id, config={}, **fields)
            session.add(job)
            session.flush()
            ids[name] = job.id
        return ids


def _row(factory: sessionmaker[Session], job_id: uuid.UUID) -> TrainingJob:
    with session_scope(factory) as session:
        row = session.get(TrainingJob, job_id)
        assert row is not None
        session.expunge(row)
        return row


def test_each_unfinished_job_gets_what_its_state_needs(
    factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="app.services.sweeper")
    now = utcnow()
    old, stale, fresh = now - timedelta(seconds=400), now - timedelta(seconds=90), now - timedelta(seconds=5)
    queued = {"status": JobStatus.queued, "progress": {"phase": "queued"}}
    ids = _add_jobs(
        factory,
        {
            "pending": {**queued, "progress": mark_pending({"phase": "queued"}, "refused")},
            "young": {**queued, "created_at": fresh},
            "old": {**queued, "created_at": old},
            "live": {"status": JobStatus.running, "attempt": 1, "heartbeat_at": fresh},
            "dead": {"status": JobStatus.running, "attempt": 1, "heartbeat_at": stale},
            "hopeless": {"status": JobStatus.running, "attempt": 3, "heartbeat_at": stale},
            "done": {"status": JobStatus.succeeded, "attempt": 1, "heartbeat_at": stale},
        },
    )
    queue = RecordingQueue()
    sweeper = Sweeper(factory, queue, POLICY)

    report = sweeper.sweep_once()
    assert queue.sent[0] == ids["pending"], "the outbox goes first"
    assert set(queue.sent) == {ids["pending"], ids["old"], ids["dead"]}
    assert (report.sent_pending, report.resent_queued, report.resent_stale) == (
        [ids["pending"]],
        [ids["old"]],
        [ids["dead"]],
    )
    assert report.failed == [ids["hopeless"]]
    assert _row(factory, ids["pending"]).progress == {"phase": "queued"}
    hopeless = _row(factory, ids["hopeless"])
    assert hopeless.status is JobStatus.failed and "max_attempts=3" in (hopeless.error or "")
    assert _row(factory, ids["live"]).status is JobStatus.running
    # Every action is in the log with its job.
    logged = [r.getMessage() for r in caplog.records]
    assert f"sweeper: job {ids['dead']} re-sent (running, worker silent)" in logged
    assert f"sweeper: job {ids['hopeless']} failed (out of attempts)" in logged

    # The next pass does not flood the broker with the same jobs.
    queue.sent.clear()
    again = sweeper.sweep_once()
    assert queue.sent == [] and again.failed == []


def test_a_refusing_broker_keeps_the_outbox_for_the_next_pass(factory: sessionmaker[Session]) -> None:
    ids = _add_jobs(
        factory,
        {
            "first": {"status": JobStatus.queued, "progress": mark_pending(None, "refused")},
            "second": {"status": JobStatus.queued, "progress": mark_pending(None, "refused")},
        },
    )
    queue = RecordingQueue()
    queue.down = True
    sweeper = Sweeper(factory, queue, POLICY)

    report = sweeper.sweep_once()
    assert report.sent_pending == [] and "connection refused" in (report.send_error or "")
    assert _row(factory, ids["first"]).progress["dispatch"] == "pending"

    queue.down = False
    report = sweeper.sweep_once()
    assert sorted(report.sent_pending) == sorted(ids.values()) and sorted(queue.sent) == sorted(ids.values())
    assert all(_row(factory, i).progress == {"phase": "queued"} for i in ids.values())


def test_a_job_claimed_meanwhile_keeps_its_progress(factory: sessionmaker[Session]) -> None:
    ids = _add_jobs(
        factory,
        {
            "claimed": {
                "status": JobStatus.running,
                "attempt": 1,
                "heartbeat_at": utcnow(),
                "progress": {"phase": "warmup", "epoch": 3},
            }
        },
    )
    Sweeper(factory, RecordingQueue(), POLICY)._clear_pending(ids["claimed"])
    assert _row(factory, ids["claimed"]).progress == {"phase": "warmup", "epoch": 3}
