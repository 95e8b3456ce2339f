"""Request dependencies as typed ``Annotated`` aliases; state comes from ``app.state`` (built in
``create_app``), never from import-time globals."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import PurePosixPath
from typing import Annotated

import anyio
from fastapi import Depends, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.db.models import ApiKey, Dataset, Model, Project, TrainingJob
from app.errors import Unauthorized, UnsupportedMediaType
from app.services import datasets, jobs, keys, projects, sessions, unit
from app.services.inference import ModelCache
from app.services.queue import TaskQueue
from app.services.recent import RecentRows
from app.services.uploads import Blob, UploadLimits
from app.settings import Settings
from app.storage.base import ObjectStore

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer gtc_...`.")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One unit of work per request: commit after the route, roll back (and undo object writes) on error.

    The session is made on the event loop (it does no I/O before its first query); committing or rolling
    back runs in a worker thread, shielded from the request's cancellation so that a client hanging up
    cannot leave half a unit of work behind, and is skipped when the route never touched the database."""
    session: Session = request.app.state.session_factory()
    try:
        yield session
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_roll_back, session, limiter=anyio.CapacityLimiter(1))
        raise
    if not session.in_transaction():
        unit.forget_cleanups(session)
        session.close()
        return
    with anyio.CancelScope(shield=True):
        # A fresh limiter: ending a unit of work never waits for a free thread behind requests that
        # wait for a database connection this one holds.
        await anyio.to_thread.run_sync(_commit, session, limiter=anyio.CapacityLimiter(1))


def _commit(session: Session) -> None:
    try:
        session.commit()
    except BaseException:
        _roll_back(session)
        raise
    unit.forget_cleanups(session)
    session.close()


def _roll_back(session: Session) -> None:
    try:
        session.rollback()
        unit.run_cleanups(session)
    finally:
        session.close()


async def get_store(request: Request) -> ObjectStore:
    store: ObjectStore = request.app.state.store
    return store


async def get_queue(request: Request) -> TaskQueue:
    queue: TaskQueue = request.app.state.queue
    return queue


async def get_model_cache(request: Request) -> ModelCache:
    cache: ModelCache = request.app.state.model_cache
    return cache


async def get_limits(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> UploadLimits:
    return UploadLimits.from_settings(settings, request.app.state.decode_budget)


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": commit before the response is sent, so a failed commit is the client's error too.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
QueueDep = Annotated[TaskQueue, Depends(get_queue)]
ModelCacheDep = Annotated[ModelCache, Depends(get_model_cache)]
LimitsDep = Annotated[UploadLimits, Depends(get_limits)]


async def get_session_secret(request: Request) -> bytes:
    secret: bytes = request.app.state.session_secret
    return secret


SessionSecretDep = Annotated[bytes, Depends(get_session_secret)]
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_recent_keys(request: Request) -> RecentRows[ApiKey]:
    recent: RecentRows[ApiKey] = request.app.state.recent_keys
    return recent


RecentKeysDep = Annotated[RecentRows[ApiKey], Depends(get_recent_keys)]


async def get_recent_models(request: Request) -> RecentRows[Model]:
    recent: RecentRows[Model] = request.app.state.recent_models
    return recent


RecentModelsDep = Annotated[RecentRows[Model], Depends(get_recent_models)]


async def get_api_key(
    request: Request,
    session: SessionDep,
    secret: SessionSecretDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    recent: RecentKeysDep,
) -> ApiKey:
    """The API key of the request: the bearer token (a key looked up a moment ago is not looked up
    again, ``app.services.recent``), or the review pages' session cookie (with the session's CSRF token
    on requests that change something)."""
    if credentials is not None:
        digest = projects.key_digest(credentials.credentials)
        key = recent.get(session, digest)
        if key is None:
            row = await run_in_threadpool(projects.authenticate_key, session, credentials.credentials)
            key = recent.remember(session, digest, row, row.project)
        return key
    return await run_in_threadpool(_browser_key, request, session, secret)


def _browser_key(request: Request, session: Session, secret: bytes) -> ApiKey:
    cookie = request.cookies.get(sessions.COOKIE)
    if cookie is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'.")
    browser = sessions.read(secret, cookie)
    if request.method not in _SAFE_METHODS:
        sessions.check_csrf(secret, browser, request.headers.get(sessions.CSRF_HEADER))
    key = projects.key_by_id(session, browser.api_key_id)
    if keys.session_ended(session, browser):
        raise Unauthorized("this browser session was signed out: sign in again.")
    return key


ApiKeyDep = Annotated[ApiKey, Depends(get_api_key)]


async def get_project(key: ApiKeyDep) -> Project:
    """The key's project, loaded with the key (no I/O: it runs on the event loop, not in the threadpool)."""
    return key.project


ProjectDep = Annotated[Project, Depends(get_project)]


def get_dataset(dataset_id: uuid.UUID, session: SessionDep, project: ProjectDep) -> Dataset:
    return datasets.get_dataset(session, project, dataset_id)


def get_job(job_id: uuid.UUID, session: SessionDep, project: ProjectDep) -> TrainingJob:
    return jobs.get_job(session, project, job_id)


DatasetDep = Annotated[Dataset, Depends(get_dataset)]
JobDep = Annotated[TrainingJob, Depends(get_job)]

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
# Bounded by Postgres BIGINT, so an absurd offset is a 422 naming the parameter, not a database error.
Offset = Annotated[int, Query(ge=0, le=2**63 - 1, description="Items to skip.")]


def read_uploads(files: list[UploadFile]) -> list[Blob]:
    """Multipart parts -> named blobs; names are base names (some clients send a path)."""
    blobs = []
    for i, part in enumerate(files):
        name = PurePosixPath((part.filename or f"file{i}").replace("\\", "/")).name or f"file{i}"
        blobs.append(Blob.from_file(name, part.file))  # read on demand: the parser spooled it to disk
    return blobs


def _require_content_type(request: Request, allowed: tuple[str, ...]) -> None:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(allowed):
        raise UnsupportedMediaType(
            f"expected a {' or '.join(allowed)} body, got content type {content_type or 'none'!r}."
        )


async def require_multipart(request: Request) -> None:
    """File uploads are multipart forms; anything else is refused with 415 instead of a confusing 422."""
    _require_content_type(request, ("multipart/form-data",))


async def require_form(request: Request) -> None:
    """A form that may carry a file (multipart) or only fields (urlencoded)."""
    _require_content_type(request, ("multipart/form-data", "application/x-www-form-urlencoded"))


Multipart = Depends(require_multipart)
FormBody = Depends(require_form)
