"""The review pages: sign in with the project's API key, list the jobs, review one job's masks.

Server-rendered (Jinja2), with one script and one style sheet served by the app (no build step, no CDN).
The page's script calls the same ``/v1`` endpoints as any client; the browser authenticates them with
the session cookie set at sign-in (``app.services.sessions``) and the CSRF token the page carries. The
key itself travels once, in the body of the sign-in form, and never in a URL.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from app.api.deps import SessionDep, SessionSecretDep, SettingsDep
from app.db.models import ApiKey, JobStatus, Project, TrainingJob
from app.errors import Forbidden, Unauthorized
from app.schemas.jobs import JobOut
from app.services import curation, datasets, jobs, keys, projects, reports, sessions, volumes

HERE = Path(__file__).parent
STATIC = "/review-assets"
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/review", include_in_schema=False)


def install(app: FastAPI) -> None:
    app.mount(STATIC, StaticFiles(directory=str(HERE / "static")), name="review-assets")
    app.include_router(router)


def _signed_in(request: Request, session: Session, secret: bytes) -> tuple[ApiKey, Project, str] | None:
    """(key row, project, CSRF token) of the browser's session; None when it has none that is valid."""
    cookie = request.cookies.get(sessions.COOKIE)
    if cookie is None:
        return None
    try:
        browser = sessions.read(secret, cookie)
        key = projects.key_by_id(session, browser.api_key_id)
    except Unauthorized:
        return None
    if keys.session_ended(session, browser):
        return None
    return key, key.project, browser.csrf_token(secret)


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path
    return RedirectResponse(f"/review/login?next={target}", status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a path of these pages: never an absolute URL or another site (no open redirect)."""
    if target and target.startswith("/review/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/review/"


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request, session: SessionDep, secret: SessionSecretDep, next: str | None = None
) -> Response:
    if _signed_in(request, session, secret) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return templates.TemplateResponse(request, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: SessionDep,
    secret: SessionSecretDep,
    settings: SettingsDep,
    api_key: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form(max_length=500)] = "/review/",
) -> Response:
    try:
        key = projects.authenticate_key(session, api_key.strip())
    except Unauthorized as exc:
        context = {"next": _safe_next(next), "error": exc.detail}
        return templates.TemplateResponse(request, "login.html", context, status_code=401)
    cookie, _ = sessions.issue(secret, key.id, settings.session_ttl_s)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        sessions.COOKIE,
        cookie,
        max_age=settings.session_ttl_s,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
def logout(
    request: Request,
    session: SessionDep,
    secret: SessionSecretDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    signed = _signed_in(request, session, secret)
    if signed is not None and signed[2] != csrf:
        raise Forbidden("sign out from the page's own form (its CSRF token is missing or wrong).")
    if signed is not None:  # the cookie is refused from now on, wherever a copy of it is
        keys.end_session(session, sessions.read(secret, request.cookies[sessions.COOKIE]))
    response = RedirectResponse("/review/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/")
    return response


@router.get("/", response_class=HTMLResponse)
def job_list(request: Request, session: SessionDep, secret: SessionSecretDep) -> Response:
    signed = _signed_in(request, session, secret)
    if signed is None:
        return _to_login(request)
    key, project, csrf = signed
    rows, _ = jobs.list_jobs(session, project, dataset_id=None, status=None, limit=200, offset=0)
    listed, _ = datasets.list_datasets(session, project, name=None, limit=1000, offset=0)
    names = {d.id: d.name for d in listed}
    context = {
        "project": project,
        "key": key,
        "csrf": csrf,
        "jobs": [_job_summary(j, names.get(j.dataset_id, "")) for j in rows],
    }
    return templates.TemplateResponse(request, "jobs.html", context)


def _job_summary(job: TrainingJob, dataset_name: str) -> dict[str, Any]:
    """One row of the job list, as the page first shows it (``jobs.js`` then follows the running ones)."""
    out = JobOut.from_row(job)
    quality = out.quality or {}
    corrections = quality.get("corrections") or {}
    config = out.config
    setup = [f"preset {out.preset}" if out.preset else "own config", str(config.get("method", "gt"))]
    setup.append(f"{config.get('image_size')} px")
    if out.total_epochs:
        setup.append(f"{out.total_epochs} epochs")
    progress = "waiting for a worker" if out.status == JobStatus.queued else out.phase or ""
    if out.epoch is not None and out.total_epochs and out.status == JobStatus.running:
        progress += f" · epoch {out.epoch} of {out.total_epochs}"
    validation = quality.get("validation")
    return {
        "id": str(job.id),
        "dataset": dataset_name,
        "status": job.status.value,
        "progress": progress,
        "setup": " · ".join(setup),
        "validation": "–" if not validation else f"{validation['dice']:.3f}",
        "created_at": job.created_at.strftime("%Y-%m-%d %H:%M"),
        "corrections": corrections.get("status"),
        "warnings": [w.get("code") for w in quality.get("warnings", [])],
    }


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def review_page(
    job_id: uuid.UUID, request: Request, session: SessionDep, secret: SessionSecretDep
) -> Response:
    signed = _signed_in(request, session, secret)
    if signed is None:
        return _to_login(request)
    key, project, csrf = signed
    job = jobs.get_job(session, project, job_id)
    dataset = datasets.get_dataset(session, project, job.dataset_id)
    context = {
        "project": project,
        "key": key,
        "csrf": csrf,
        "job": job,
        "dataset": dataset,
        "quality": job.quality or {},
        "notes": list((job.batch_ids or {}).get("notes") or []),
        "succeeded": job.status == JobStatus.succeeded,
        "annotators": reports.annotator_stats(session, job) if job.status == JobStatus.succeeded else [],
        "volumes": volumes.volume_verdicts(session, job) if job.status == JobStatus.succeeded else [],
        "versions": curation.curated_versions(session, job),
    }
    return templates.TemplateResponse(request, "review.html", context)
