"""Review decisions on a succeeded job's masks: accept the proposed correction, keep the original, or
send the sample back for re-annotation.

A decision is data (who, when, which sample, what, a note). Putting the decision a sample already has
changes nothing (idempotent); a different one supersedes it, and the old row stays as history. Bulk rules
decide many samples at once, never overriding a decision already made.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session

from app.db.models import CorrectedMask, NoiseFlag, ReviewChoice, ReviewDecision, Sample, TrainingJob, utcnow
from app.errors import InvalidInput, NotFound
from app.services.reports import require_succeeded, spreadsheet_safe
from app.services.uploads import text_problem

BulkRule = Literal["keep_unflagged", "accept_proposed_above"]


@dataclass(frozen=True)
class Reviewer:
    """Who decides: a free name from the request and the API key that made it."""

    name: str
    api_key_id: uuid.UUID | None


@dataclass(frozen=True)
class DecisionRow:
    sample_id: uuid.UUID
    file_name: str
    decision: ReviewChoice
    reviewer: str
    note: str
    created_at: datetime
    superseded_at: datetime | None


def _flag(session: Session, job: TrainingJob, sample_id: uuid.UUID) -> NoiseFlag:
    flag = session.scalar(
        select(NoiseFlag).where(NoiseFlag.job_id == job.id, NoiseFlag.sample_id == sample_id)
    )
    if flag is None:
        raise NotFound(f"sample {sample_id} is not in the noise report of job {job.id}.")
    return flag


def _has_correction(session: Session, job: TrainingJob, sample_id: uuid.UUID) -> bool:
    query = select(CorrectedMask.id).where(
        CorrectedMask.job_id == job.id, CorrectedMask.sample_id == sample_id
    )
    return session.scalar(query) is not None


def _current(session: Session, job: TrainingJob, sample_id: uuid.UUID) -> ReviewDecision | None:
    return session.scalar(
        select(ReviewDecision).where(
            ReviewDecision.job_id == job.id,
            ReviewDecision.sample_id == sample_id,
            ReviewDecision.superseded_at.is_(None),
        )
    )


def check_text(field: str, value: str, max_length: int) -> str:
    problem = text_problem(value, allow_newlines=field == "note")
    if problem is not None:
        raise InvalidInput(f"{field} {problem}.", field=field)
    if len(value) > max_length:
        raise InvalidInput(f"{field} is longer than {max_length} characters.", field=field)
    return value.strip() if field != "note" else value


def decide(
    session: Session,
    job: TrainingJob,
    sample_id: uuid.UUID,
    decision: ReviewChoice,
    reviewer: Reviewer,
    note: str = "",
) -> tuple[DecisionRow, bool]:
    """Record ``decision`` for one sample; returns the current decision and whether it is new."""
    require_succeeded(job)
    _flag(session, job, sample_id)
    sample = session.get(Sample, sample_id)
    assert sample is not None  # the flag references it
    name = check_text("reviewer", reviewer.name, 200)
    note = check_text("note", note, 2000)
    if decision == ReviewChoice.accept_correction and not _has_correction(session, job, sample_id):
        raise InvalidInput(
            f"job {job.id} proposes no correction for sample {sample_id}: it can be kept or sent for "
            "re-annotation, not corrected.",
            field="decision",
        )
    current = _current(session, job, sample_id)
    if current is not None and current.decision == decision and current.note == note:
        return _row(current, sample.file_name), False
    now = utcnow()
    if current is not None:
        current.superseded_at = now
        session.flush()  # the partial unique index allows one current row per sample
    row = ReviewDecision(
        job_id=job.id,
        sample_id=sample_id,
        decision=decision,
        reviewer=name,
        api_key_id=reviewer.api_key_id,
        note=note,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return _row(row, sample.file_name), True


def _row(d: ReviewDecision, file_name: str) -> DecisionRow:
    return DecisionRow(d.sample_id, file_name, d.decision, d.reviewer, d.note, d.created_at, d.superseded_at)


def undecide(session: Session, job: TrainingJob, sample_id: uuid.UUID) -> None:
    """Withdraw a sample's current decision (kept as history); nothing to withdraw is a 404."""
    require_succeeded(job)
    current = _current(session, job, sample_id)
    if current is None:
        raise NotFound(f"sample {sample_id} of job {job.id} has no decision.")
    current.superseded_at = utcnow()
    session.flush()


def _decision_query(job: TrainingJob, history: bool) -> Select[ReviewDecision, str]:
    query = (
        select(ReviewDecision, Sample.file_name)
        .join(Sample, Sample.id == ReviewDecision.sample_id)
        .where(ReviewDecision.job_id == job.id)
    )
    return query if history else query.where(ReviewDecision.superseded_at.is_(None))


def list_decisions(
    session: Session, job: TrainingJob, *, history: bool, limit: int | None, offset: int = 0
) -> tuple[list[DecisionRow], int]:
    """Current decisions (or every decision with ``history``), by file name then time."""
    require_succeeded(job)
    query = _decision_query(job, history)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    query = query.order_by(Sample.file_name, ReviewDecision.created_at).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    rows = [_row(d, name) for d, name in session.execute(query).all()]
    return rows, total


def decisions_csv(rows: list[DecisionRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["sample_id", "file_name", "decision", "reviewer", "note", "created_at", "superseded_at"])
    for r in rows:
        values = [
            r.sample_id,
            r.file_name,
            r.decision.value,
            r.reviewer,
            r.note,
            r.created_at,
            r.superseded_at,
        ]
        writer.writerow([spreadsheet_safe(v) for v in values])
    return buffer.getvalue()


def current_decisions(session: Session, job: TrainingJob) -> dict[uuid.UUID, ReviewChoice]:
    rows = session.execute(_decision_query(job, history=False)).all()
    return {d.sample_id: d.decision for d, _ in rows}


def bulk_decide(
    session: Session, job: TrainingJob, rule: BulkRule, reviewer: Reviewer, min_noise_probability: float = 0.9
) -> int:
    """Decide every undecided sample a rule covers; returns how many were decided.

    keep_unflagged: keep the original of every unflagged mask. accept_proposed_above: accept every
    proposed correction whose mask is noisy with probability >= ``min_noise_probability``.
    """
    require_succeeded(job)
    if not 0.0 <= min_noise_probability <= 1.0:
        raise InvalidInput(
            f"min_noise_probability must lie in [0, 1], got {min_noise_probability}.",
            field="min_noise_probability",
        )
    decided = select(ReviewDecision.sample_id).where(
        ReviewDecision.job_id == job.id, ReviewDecision.superseded_at.is_(None)
    )
    query = select(NoiseFlag.sample_id).where(NoiseFlag.job_id == job.id, NoiseFlag.sample_id.not_in(decided))
    if rule == "keep_unflagged":
        choice = ReviewChoice.keep_original
        query = query.where(NoiseFlag.flagged.is_(False))
    else:
        choice = ReviewChoice.accept_correction
        query = query.join(
            CorrectedMask,
            and_(CorrectedMask.job_id == job.id, CorrectedMask.sample_id == NoiseFlag.sample_id),
        ).where(NoiseFlag.clean_probability <= 1.0 - min_noise_probability)
    now = utcnow()
    samples = list(session.scalars(query))
    session.add_all(
        ReviewDecision(
            job_id=job.id,
            sample_id=s,
            decision=choice,
            reviewer=check_text("reviewer", reviewer.name, 200),
            api_key_id=reviewer.api_key_id,
            note=f"bulk: {rule}",
            created_at=now,
        )
        for s in samples
    )
    session.flush()
    return len(samples)
