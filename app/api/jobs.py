"""/v1/jobs: start, watch and cancel training."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from app.api.deps import JobDep, Limit, Offset, ProjectDep, QueueDep, SessionDep, SettingsDep, StoreDep
from app.db.models import JobStatus
from app.schemas.common import Page
from app.schemas.jobs import JobCreate, JobOut
from app.services import cleanup, datasets, jobs

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=202,
    summary="Start a training job",
    description=(
        "The job row is committed `queued` before its task is sent. If the broker is down the job stays "
        "`queued` (progress.dispatch = pending) and the API's sweeper sends it once the broker is back."
    ),
    response_model=JobOut,
    responses={
        422: {
            "description": "Invalid config (`field` names it, e.g. `config.t.epochs`: type, the engine's "
            "rules or this service's limits) or no annotated samples."
        },
        429: {"description": "The project already has GTC_MAX_ACTIVE_JOBS queued or running jobs."},
    },
)
def create_job(
    body: JobCreate,
    session: SessionDep,
    project: ProjectDep,
    queue: QueueDep,
    settings: SettingsDep,
    store: StoreDep,
    response: Response,
) -> JobOut:
    """Queue a training job on the dataset's latest masks (or the named `batch_ids`) with a config
    (every field optional; unknown fields and out-of-range values are refused with the field named)."""
    dataset = datasets.get_dataset(session, project, body.dataset_id)
    job = jobs.create_job(
        session,
        store,
        project,
        dataset,
        body.batch_ids,
        body.config,
        settings,
        body.preset,
        body.consensus,
        body.train_on,
    )
    jobs.submit(session, queue, job)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.from_row(job)


@router.get("", summary="List jobs", response_model=Page[JobOut])
def list_jobs(
    session: SessionDep,
    project: ProjectDep,
    limit: Limit = 50,
    offset: Offset = 0,
    dataset_id: uuid.UUID | None = None,
    status: JobStatus | None = None,
) -> Page[JobOut]:
    """The project's jobs, newest first, as a page; filter by `status` or `dataset_id`."""
    rows, total = jobs.list_jobs(
        session, project, dataset_id=dataset_id, status=status, limit=limit, offset=offset
    )
    return Page(items=[JobOut.from_row(j) for j in rows], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", summary="Get a job: status, phase, epoch, round, metrics", response_model=JobOut)
def get_job(job: JobDep) -> JobOut:
    """One job: status, progress (phase, epoch, round), metrics, and once it succeeded its `quality` (how far
    to trust the noise report; docs/QUALITY.md).
    """
    return JobOut.from_row(job)


@router.post(
    "/{job_id}/cancel",
    summary="Cancel a job (a queued job at once, a running one at its next check)",
    response_model=JobOut,
    responses={409: {"description": "The job already finished."}},
)
def cancel_job(job: JobDep, session: SessionDep) -> JobOut:
    """Ask a queued or running job to stop; the worker stops at the next batch and the job ends as
    cancelled."""
    return JobOut.from_row(jobs.cancel_job(session, job))


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Delete a finished, failed or cancelled job with its report, plots and checkpoints",
    responses={409: {"description": "The job is still queued or running, or its model is registered."}},
)
def delete_job(job: JobDep, session: SessionDep, store: StoreDep) -> Response:
    """The job's rows (report, decisions, GMM rounds, annotator report) and objects go; 409 while it is
    queued or running (cancel it first) or while its model exists (delete the model first)."""
    cleanup.delete_job(session, store, job)
    return Response(status_code=204)
