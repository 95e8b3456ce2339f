"""The FastAPI application: ``uvicorn app.main:create_app --factory``.

Everything stateful (engine, sessions, object store, queue client, model cache) is built from the
settings when the app starts (lifespan), never at import time, so tests build apps from their own
``Settings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from app.api import annotations as annotation_routes
from app.api import config as config_routes
from app.api import datasets, docs, health, jobs, keys, metrics, models, problems, results, reviews
from app.api.gate import CredentialsFirst
from app.api.limits import BodySizeLimit
from app.db.models import ApiKey, Model
from app.db.session import make_engine, make_session_factory
from app.logs import configure_logging
from app.memory import TrimAfterLargeRequests, tune_allocator
from app.services.inference import ModelCache
from app.services.queue import CeleryQueue
from app.services.recent import RecentRows
from app.services.sweeper import Sweeper, SweepPolicy
from app.services.uploads import DecodeBudget
from app.settings import Settings, get_settings
from app.storage import make_store
from app.web import pages

log = logging.getLogger(__name__)

DESCRIPTION = """Train segmentation models on noisy annotations with G-T correcting, read which masks look
wrong, export corrected masks and segment new images. Every `/v1` endpoint needs
`Authorization: Bearer <API key>`. Errors are RFC 9457 `application/problem+json`."""


async def _sweep_forever(sweeper: Sweeper, interval_s: float) -> None:
    """Sweep every ``interval_s`` until cancelled; the first pass waits one interval (``gtcorrect serve``
    re-sends at start already) and a failing pass is logged, never fatal."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(sweeper.sweep_once)
        except Exception:
            log.exception("job sweep failed; retrying in %.0f s", interval_s)


def _start_sweeper(app: FastAPI, settings: Settings) -> asyncio.Task[None] | None:
    if settings.sweep_interval_s <= 0:
        return None
    policy = SweepPolicy(settings.heartbeat_stale_s, settings.queued_resend_s, settings.max_attempts)
    app.state.sweeper = Sweeper(app.state.session_factory, app.state.queue, policy)
    return asyncio.create_task(_sweep_forever(app.state.sweeper, settings.sweep_interval_s))


def _lifespan(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.resolved_database_url())
        queue = CeleryQueue(settings.resolved_broker_url(), settings.broker_transport_options())
        app.state.settings = settings
        app.state.engine = engine
        app.state.session_factory = make_session_factory(engine)
        app.state.store = make_store(settings)
        app.state.queue = queue
        app.state.model_cache = ModelCache(
            settings.model_cache_size,
            settings.device,
            max_batch=settings.infer_max_batch,
            window_s=settings.infer_batch_window_ms / 1000.0,
        )
        app.state.recent_keys = RecentRows[ApiKey](settings.lookup_cache_seconds)
        app.state.recent_models = RecentRows[Model](settings.lookup_cache_seconds)
        sweeping = _start_sweeper(app, settings)
        try:
            yield
        finally:
            if sweeping is not None:
                sweeping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeping
            app.state.model_cache.clear()
            queue.close()
            engine.dispose()

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: ``get_settings()`` from ``GTC_*`` variables)."""
    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level)
    app = FastAPI(
        title="gtcorrect",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=_lifespan(settings),
        form_limits={"max_files": settings.max_zip_entries},
        docs_url=None,  # app.api.docs serves both pages with local assets
        redoc_url=None,
    )
    docs.install(app)
    pages.install(app)
    problems.install(app)
    metrics.install(app)
    config_routes.install_schema(app, settings.config_limits())
    tune_allocator()
    app.state.decode_budget = DecodeBudget(settings.max_decode_bytes)
    secret = settings.session_secret
    app.state.session_secret = secret.encode() if secret else secrets.token_bytes(32)
    app.add_middleware(TrimAfterLargeRequests)
    # Outermost last: the key is checked before the size limit lets any of the body in.
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_upload_bytes, max_json_bytes=settings.max_json_bytes
    )
    app.add_middleware(CredentialsFirst)
    for module in (health, datasets, annotation_routes, jobs, config_routes, results, reviews, models, keys):
        app.include_router(module.router)
    return app
