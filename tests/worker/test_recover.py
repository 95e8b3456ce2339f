"""Re-sending unfinished jobs when ``gtcorrect serve`` starts (embedded SQLite + filesystem broker)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import Engine

from app.db.models import Dataset, JobStatus, Project, TrainingJob, utcnow
from app.db.session import make_engine, make_session_factory, session_scope
from app.settings import Settings
from worker.celery_app import make_celery
from worker.recover import resend_delays, resend_unfinished


def _jobs(engine: Engine, stale_s: int) -> dict[str, uuid.UUID]:
    now = utcnow()
    states = {
        "queued": (JobStatus.queued, None),
        "fresh": (JobStatus.running, now - timedelta(seconds=10)),
        "stale": (JobStatus.running, now - timedelta(seconds=stale_s * 2)),
        "done": (JobStatus.succeeded, now),
    }
    with session_scope(make_session_factory(engine)) as session:
        project = Project(name="local")
        session.add(project)
        session.flush()
        dataset = Dataset(project_id=project.id, name="d", label_map={"0": "background", "1": "fg"})
        session.add(dataset)
        session.flush()
        ids = {}
        for name, (status, beat) in states.items():
            job = TrainingJob(
                project_id=project.id, dataset_id=dataset.id, config={}, status=status, heartbeat_at=beat
            )
            session.add(job)
            session.flush()
            ids[name] = job.id
        return ids


def test_unfinished_jobs_are_resent_when_their_claim_can_succeed(embedded_settings: Settings) -> None:
    engine = make_engine(embedded_settings.resolved_database_url())
    stale_s = embedded_settings.heartbeat_stale_s
    ids = _jobs(engine, stale_s)
    factory = make_session_factory(engine)

    delays = resend_delays(factory, stale_s)
    assert set(delays) == {ids["queued"], ids["fresh"], ids["stale"]}
    assert delays[ids["queued"]] == 0.0 and delays[ids["stale"]] == 1.0
    # A live-looking heartbeat: wait until it would be stale, or the claim refuses the job.
    assert stale_s - 11 <= delays[ids["fresh"]] <= stale_s - 8

    app = make_celery(embedded_settings)
    assert resend_unfinished(app, factory, stale_s) == 3
    messages = [p.read_text() for p in (embedded_settings.broker_dir / "queue").iterdir()]
    assert len(messages) == 3 and all("gtcorrect.train" in m for m in messages)
    assert {str(ids[n]) for n in ("queued", "fresh", "stale")} == {
        job_id for job_id in map(str, ids.values()) if any(job_id in m for m in messages)
    }
    engine.dispose()
