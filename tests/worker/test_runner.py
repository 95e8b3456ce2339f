"""The job runner against real PostgreSQL and a real S3 server (SeaweedFS), with a tiny G-T config."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import AnnotatorStat, CorrectedMask, JobStatus, Model, NoiseFlag, TrainingJob, utcnow
from app.db.session import session_scope
from app.schemas.jobs import JobOut
from app.services import jobstate
from app.settings import Settings
from app.storage import ObjectStore, keys, make_store
from gtcorrect.data import read_mask
from gtcorrect.model import ModelBundle
from tests.worker.seed import Seeded, seed_job, tiny_config
from tests.worker.synthetic import make_set
from worker.runner import RunnerContext, run_job

pytestmark = pytest.mark.integration

Factory = sessionmaker[Session]


@pytest.fixture
def ctx(settings: Settings, db_session_factory: Factory) -> RunnerContext:
    return RunnerContext(settings, db_session_factory, make_store(settings), cancel_poll_s=0.0)


@pytest.fixture
def seeded(ctx: RunnerContext) -> Seeded:
    return seed_job(ctx.session_factory, ctx.store, make_set(8, 2, seed=1), tiny_config())


def _job(factory: Factory, job_id: uuid.UUID) -> TrainingJob:
    with session_scope(factory) as session:
        job = session.get(TrainingJob, job_id)
        assert job is not None
        return job


def _set_job(factory: Factory, job_id: uuid.UUID, **values: Any) -> None:
    with session_scope(factory) as session:
        session.execute(update(TrainingJob).where(TrainingJob.id == job_id).values(**values))


def _rows(factory: Factory, model: type[Any], job_id: uuid.UUID) -> list[Any]:
    with session_scope(factory) as session:
        return list(session.scalars(select(model).where(model.job_id == job_id)).all())


class HookedStore:
    """The real store, plus an action run just before the n-th checkpoint (or other ``marker`` key) is
    written (a kill, a cancel)."""

    def __init__(
        self, inner: ObjectStore, at_checkpoint: int, action: Any, marker: str = "/checkpoints/"
    ) -> None:
        self.inner, self.at, self.action, self.marker = inner, at_checkpoint, action, marker
        self.checkpoints: list[str] = []

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if self.marker in key:
            self.checkpoints.append(key)
            if len(self.checkpoints) == self.at:
                self.action()
        self.inner.put(key, data, content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: not an Exception, so the runner cannot record anything."""


def _kill() -> None:
    raise WorkerKilled


def test_success_records_rows_and_objects(ctx: RunnerContext, seeded: Seeded) -> None:
    assert run_job(seeded.job_id, ctx) is JobStatus.succeeded

    job = _job(ctx.session_factory, seeded.job_id)
    assert job.status is JobStatus.succeeded and job.error is None and job.attempt == 1
    assert job.progress["phase"] == "done" and job.progress["epoch"] == job.progress["total_epochs"]
    assert job.finished_at is not None and job.checkpoint_key is None

    flags = _rows(ctx.session_factory, NoiseFlag, seeded.job_id)
    assert sorted(f.sample_id for f in flags) == sorted(seeded.sample_ids)
    by_sample = dict(zip(seeded.sample_ids, seeded.annotation_ids, strict=True))
    assert all(f.annotation_id == by_sample[f.sample_id] for f in flags)
    assert all(0.0 <= f.clean_probability <= 1.0 for f in flags)
    # Per foreground class (one here): the given mask's Dice to the prediction, or None with neither.
    assert all(len(f.class_dice) == 1 for f in flags)
    assert all(d is None or 0.0 <= d <= 1.0 for f in flags for d in f.class_dice)

    corrected = _rows(ctx.session_factory, CorrectedMask, seeded.job_id)
    assert {c.sample_id for c in corrected} == {f.sample_id for f in flags if f.flagged}
    for row in corrected:
        mask = read_mask(ctx.store.get(row.object_key), num_classes=2)
        assert mask.shape == (40, 48)  # the original size, not the 32 px training size
        assert 0.0 <= row.changed_fraction <= 1.0

    (annotator,) = _rows(ctx.session_factory, AnnotatorStat, seeded.job_id)
    assert annotator.annotator == "vendor-a" and annotator.n_masks == 8
    assert annotator.n_flagged == sum(f.flagged for f in flags) and annotator.relative_offset_px is None
    assert "the model" in annotator.verdict or "too few" in annotator.verdict

    (model,) = _rows(ctx.session_factory, Model, seeded.job_id)
    assert model.version == 1 and model.metrics["samples"] == 8
    bundle = ModelBundle.from_bytes(ctx.store.get(model.weights_key))
    assert bundle.image_size == 32 and bundle.label_map.names == ("background", "disc")

    job_objects = list(ctx.store.list(keys.job_prefix(seeded.project_id, seeded.job_id)))
    assert keys.plot(seeded.project_id, seeded.job_id, "gmm_round_0") in job_objects
    assert not [k for k in job_objects if "/checkpoints/" in k], "checkpoints must go once the model exists"


def test_progress_shows_every_phase_in_order_with_an_eta(
    ctx: RunnerContext, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[JobOut] = []
    beat = jobstate.heartbeat

    def watched(factory: Factory, job: Any, progress: dict[str, Any] | None = None) -> bool:
        owned = beat(factory, job, progress)
        if progress is not None:
            seen.append(JobOut.from_row(_job(factory, job.id)))
        return owned

    monkeypatch.setattr(jobstate, "heartbeat", watched)
    assert run_job(seeded.job_id, ctx) is JobStatus.succeeded
    phases = [j.phase for j in seen]
    total = seen[-1].total_epochs
    assert phases[:2] == ["fetching_inputs", "preparing"] and phases[-2:] == ["assessing", "storing_results"]
    training = seen[2:-2]
    assert training[0].phase == "warmup" and training[-1].phase.startswith("t_")
    assert [j.epoch for j in training] == list(range(1, len(training) + 1)) and total == len(training)
    # Exact from the start: the T stage trains the epochs the G stage leaves unused (t.fill_schedule).
    assert {j.total_epochs for j in seen} == {total} and seen[0].epoch is None
    etas = [j.eta_seconds for j in training]
    assert all(e is not None and e >= 0 for e in etas) and etas[-1] == 0 and etas[0] > 0
    assert seen[0].eta_seconds is None and seen[-1].eta_seconds is None
    assert _job(ctx.session_factory, seeded.job_id).progress["phase"] == "done"


def test_second_run_of_a_finished_job_does_nothing(ctx: RunnerContext, seeded: Seeded) -> None:
    assert run_job(seeded.job_id, ctx) is JobStatus.succeeded
    first = _job(ctx.session_factory, seeded.job_id)
    (model,) = _rows(ctx.session_factory, Model, seeded.job_id)

    assert run_job(seeded.job_id, ctx) is None
    again = _job(ctx.session_factory, seeded.job_id)
    assert (again.status, again.attempt, again.finished_at) == (
        first.status,
        first.attempt,
        first.finished_at,
    )
    assert [m.id for m in _rows(ctx.session_factory, Model, seeded.job_id)] == [model.id]


def test_a_job_with_a_fresh_heartbeat_belongs_to_another_worker(ctx: RunnerContext, seeded: Seeded) -> None:
    _set_job(ctx.session_factory, seeded.job_id, status=JobStatus.running, attempt=1, heartbeat_at=utcnow())
    assert run_job(seeded.job_id, ctx) is None
    job = _job(ctx.session_factory, seeded.job_id)
    assert (job.status, job.attempt) == (JobStatus.running, 1)


def test_missing_object_fails_the_job_with_a_readable_error(ctx: RunnerContext, seeded: Seeded) -> None:
    missing = keys.sample(seeded.project_id, seeded.dataset_id, seeded.sample_ids[3])
    ctx.store.delete(missing)
    assert run_job(seeded.job_id, ctx) is JobStatus.failed
    job = _job(ctx.session_factory, seeded.job_id)
    assert job.status is JobStatus.failed and job.finished_at is not None
    assert job.error is not None and job.error.startswith("JobInputError: ")
    assert missing in job.error and "Traceback" not in job.error
    assert job.progress["phase"] == "fetching_inputs"  # where it failed


def test_out_of_attempts_fails_instead_of_looping(ctx: RunnerContext, seeded: Seeded) -> None:
    stale = utcnow() - timedelta(seconds=ctx.settings.heartbeat_stale_s + 60)
    _set_job(
        ctx.session_factory,
        seeded.job_id,
        status=JobStatus.running,
        attempt=ctx.settings.max_attempts,
        heartbeat_at=stale,
    )
    assert run_job(seeded.job_id, ctx) is None
    job = _job(ctx.session_factory, seeded.job_id)
    assert job.status is JobStatus.failed
    assert job.error is not None and f"max_attempts={ctx.settings.max_attempts}" in job.error


def test_a_job_past_its_time_limit_fails_with_the_reason(ctx: RunnerContext, seeded: Seeded) -> None:
    # Its first attempt started two hours ago (a worker died since): the limit counts from then.
    _set_job(ctx.session_factory, seeded.job_id, started_at=utcnow() - timedelta(hours=2))
    limited = RunnerContext(
        ctx.settings.model_copy(update={"job_time_limit_s": 3600}), ctx.session_factory, ctx.store, 0.0
    )
    assert run_job(seeded.job_id, limited) is JobStatus.failed
    job = _job(ctx.session_factory, seeded.job_id)
    assert job.error is not None and job.error.startswith("JobTimeLimit: the job trained for longer than")
    assert "GTC_JOB_TIME_LIMIT_S" in job.error and "3600 s" in job.error
    assert _rows(ctx.session_factory, Model, seeded.job_id) == []
    assert list(ctx.store.list(keys.job_prefix(seeded.project_id, seeded.job_id))) == []


def test_cancel_before_start_cancels_without_training(ctx: RunnerContext, seeded: Seeded) -> None:
    _set_job(ctx.session_factory, seeded.job_id, cancel_requested=True)
    assert run_job(seeded.job_id, ctx) is None
    job = _job(ctx.session_factory, seeded.job_id)
    assert job.status is JobStatus.cancelled and job.attempt == 0


def test_cancel_during_training_ends_cancelled_without_a_model(ctx: RunnerContext, seeded: Seeded) -> None:
    def request_cancel() -> None:
        _set_job(ctx.session_factory, seeded.job_id, cancel_requested=True)

    hooked = RunnerContext(ctx.settings, ctx.session_factory, HookedStore(ctx.store, 2, request_cancel), 0.0)
    assert run_job(seeded.job_id, hooked) is JobStatus.cancelled
    job = _job(ctx.session_factory, seeded.job_id)
    assert job.status is JobStatus.cancelled and job.finished_at is not None
    assert job.progress["epoch"] < job.progress["total_epochs"]
    assert _rows(ctx.session_factory, Model, seeded.job_id) == []
    assert _rows(ctx.session_factory, NoiseFlag, seeded.job_id) == []
    # Its checkpoints went with it: a cancelled job is never resumed.
    assert list(ctx.store.list(keys.job_prefix(seeded.project_id, seeded.job_id))) == []


def test_a_cancel_while_the_results_are_stored_wins(ctx: RunnerContext, seeded: Seeded) -> None:
    """Training is over and the model file is being written when the cancel comes: the job still ends
    cancelled, with no model and no objects left (a cancel the API accepted is never overtaken)."""

    def request_cancel() -> None:
        _set_job(ctx.session_factory, seeded.job_id, cancel_requested=True)

    late = HookedStore(ctx.store, 1, request_cancel, marker="/models/")
    assert (
        run_job(seeded.job_id, RunnerContext(ctx.settings, ctx.session_factory, late, 0.0))
        is JobStatus.cancelled
    )
    job = _job(ctx.session_factory, seeded.job_id)
    assert job.status is JobStatus.cancelled and job.progress["phase"] == "storing_results"
    assert late.checkpoints and _rows(ctx.session_factory, Model, seeded.job_id) == []
    assert list(ctx.store.list(keys.job_prefix(seeded.project_id, seeded.job_id))) == []
    assert list(ctx.store.list(f"{seeded.project_id}/models/")) == []


def test_stale_heartbeat_reclaim_resumes_from_the_checkpoint(ctx: RunnerContext, seeded: Seeded) -> None:
    killed_at = 3
    dying = HookedStore(ctx.store, killed_at, _kill)
    with pytest.raises(WorkerKilled):
        run_job(seeded.job_id, RunnerContext(ctx.settings, ctx.session_factory, dying, 0.0))
    job = _job(ctx.session_factory, seeded.job_id)
    assert job.status is JobStatus.running and job.checkpoint_key == dying.checkpoints[killed_at - 2]

    # The redelivered task arrives while the dead worker's heartbeat is still fresh: hands off.
    assert run_job(seeded.job_id, ctx) is None
    _set_job(
        ctx.session_factory,
        seeded.job_id,
        heartbeat_at=utcnow() - timedelta(seconds=ctx.settings.heartbeat_stale_s + 1),
    )
    resumed = HookedStore(ctx.store, 0, _kill)
    assert run_job(seeded.job_id, RunnerContext(ctx.settings, ctx.session_factory, resumed, 0.0)) is (
        JobStatus.succeeded
    )
    job = _job(ctx.session_factory, seeded.job_id)
    assert job.attempt == 2
    # The first checkpoint after resuming is the epoch after the last one saved: the epoch continues.
    assert resumed.checkpoints[0] == keys.checkpoint(seeded.project_id, seeded.job_id, killed_at)
    assert len(_rows(ctx.session_factory, NoiseFlag, seeded.job_id)) == 8
    assert np.isfinite([f.loss for f in _rows(ctx.session_factory, NoiseFlag, seeded.job_id)]).all()
