"""/v1/jobs/{id}/decisions and /curated-batches: review a succeeded job's masks and turn the decisions
into a curated annotation batch."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Response

from app.api.deps import ApiKeyDep, JobDep, Limit, Offset, SessionDep, StoreDep
from app.db.models import ApiKey
from app.schemas.annotations import BatchOut
from app.schemas.common import Page
from app.schemas.reviews import BulkIn, BulkOut, CuratedIn, DecisionIn, DecisionOut
from app.services import curation, reviews

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["review"])
_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "The job has not succeeded."}}


def _reviewer(name: str, key: ApiKey) -> reviews.Reviewer:
    return reviews.Reviewer(name.strip() or f"key {key.name}", key.id)


@router.put(
    "/decisions/{sample_id:uuid}",
    summary="Decide one mask: accept the correction, keep the original, or send it for re-annotation",
    response_model=DecisionOut,
    responses={
        **_CONFLICT,
        201: {"description": "A new decision (it supersedes the sample's previous one, kept as history)."},
        200: {"description": "The sample already had this decision: nothing changed."},
        422: {"description": "accept_correction for a sample without a proposed correction."},
    },
)
def put_decision(
    job: JobDep,
    sample_id: uuid.UUID,
    body: DecisionIn,
    session: SessionDep,
    key: ApiKeyDep,
    response: Response,
) -> DecisionOut:
    """Record a reviewer's decision on one mask (accept the correction, keep the original, or send for re-
    annotation); the previous decision is kept in the history. 201 when it changed, 200 when it was already
    so.
    """
    row, created = reviews.decide(
        session, job, sample_id, body.decision, _reviewer(body.reviewer, key), body.note
    )
    response.status_code = 201 if created else 200
    return DecisionOut.model_validate(row)


@router.delete(
    "/decisions/{sample_id:uuid}",
    status_code=204,
    summary="Withdraw a sample's decision (kept in the history)",
    responses=_CONFLICT,
)
def delete_decision(job: JobDep, sample_id: uuid.UUID, session: SessionDep) -> Response:
    """Withdraw the current decision on one mask (the history keeps it)."""
    reviews.undecide(session, job, sample_id)
    return Response(status_code=204)


@router.get(
    "/decisions",
    summary="The job's review decisions (current, or the whole history); JSON page or CSV download",
    response_model=Page[DecisionOut],
    responses={**_CONFLICT, 200: {"content": {"text/csv": {}}}},
)
def list_decisions(
    job: JobDep,
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    history: bool = False,
    format: Literal["json", "csv"] = "json",  # the public query parameter name
) -> Page[DecisionOut] | Response:
    """The job's current decisions (or, with `history=true`, every decision ever made), as a page or CSV."""
    if format == "csv":
        rows, _ = reviews.list_decisions(session, job, history=history, limit=None)
        return Response(
            reviews.decisions_csv(rows),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="decisions-{job.id}.csv"'},
        )
    rows, total = reviews.list_decisions(session, job, history=history, limit=limit, offset=offset)
    items = [DecisionOut.model_validate(r) for r in rows]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.post(
    "/decisions/bulk",
    summary="Decide every undecided mask a rule covers (keep unflagged masks; accept confident proposals)",
    response_model=BulkOut,
    responses=_CONFLICT,
)
def bulk(job: JobDep, body: BulkIn, session: SessionDep, key: ApiKeyDep) -> BulkOut:
    """Decide every undecided mask a rule covers: keep every unflagged mask, or accept every proposal above a
    noise probability.
    """
    n = reviews.bulk_decide(
        session, job, body.rule, _reviewer(body.reviewer, key), body.min_noise_probability
    )
    return BulkOut(decided=n)


@router.post(
    "/curated-batches",
    status_code=201,
    summary="Turn the job and its decisions into a new, immutable annotation batch (kind 'curated')",
    response_model=BatchOut,
    responses={
        **_CONFLICT,
        409: {"description": "The job has not succeeded, or its decisions leave no mask."},
    },
)
def create_curated(
    job: JobDep, body: CuratedIn, session: SessionDep, store: StoreDep, key: ApiKeyDep, response: Response
) -> BatchOut:
    """Turn the job and its decisions into a new accepted batch of kind `curated`: accepted corrections, kept
    originals and (optionally) undecided masks, copied into the batch's own objects with provenance.
    """
    batch = curation.create_curated_batch(
        session,
        store,
        job,
        _reviewer(body.reviewer, key),
        undecided=body.undecided,
        annotator=body.annotator,
        note=body.note,
    )
    response.headers["Location"] = f"/v1/datasets/{batch.dataset_id}/annotation-batches/{batch.id}"
    return BatchOut.model_validate(batch)
