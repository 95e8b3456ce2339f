"""/metrics: the service's state in the Prometheus text format, for the operator's scraper.

Counted as requests are served: requests by method, route template and status, and their latency.
Read from Postgres and the broker at every scrape (so every API process reports the same): jobs by
status, the queue's depth, the durations of finished jobs (a summary per final status) and, per
running job, the age of its worker's last heartbeat (a stale one means a worker died: the sweeper
requeues it). Like /readyz it needs no key: it names no project, dataset or file.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db.models import JobStatus, TrainingJob
from app.services.queue import TaskQueue

_CONVERTOR = re.compile(r":[a-z]+}")

router = APIRouter(include_in_schema=False)


class _State(Collector):
    """Jobs and queue, read when scraped (nothing before the app has started)."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        sessions: sessionmaker[Session] | None = getattr(self._app.state, "session_factory", None)
        queue: TaskQueue | None = getattr(self._app.state, "queue", None)
        if sessions is None or queue is None:
            return
        now = datetime.now(UTC).replace(tzinfo=None)
        with sessions() as session:
            counts = dict(
                session.execute(select(TrainingJob.status, func.count()).group_by(TrainingJob.status)).all()
            )
            durations = session.execute(
                select(TrainingJob.status, TrainingJob.started_at, TrainingJob.finished_at).where(
                    TrainingJob.finished_at.is_not(None), TrainingJob.started_at.is_not(None)
                )
            ).all()
            beats = session.execute(
                select(TrainingJob.id, TrainingJob.heartbeat_at).where(
                    TrainingJob.status == JobStatus.running
                )
            ).all()
        jobs = GaugeMetricFamily("gtc_jobs", "Training jobs by status.", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status, 0))
        yield jobs
        summary = SummaryMetricFamily(
            "gtc_job_duration_seconds", "Run time of finished jobs (start to end).", labels=["status"]
        )
        for status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled):
            mine = [
                (end - start).total_seconds() for s, start, end in durations if s == status and start and end
            ]
            summary.add_metric([status.value], count_value=len(mine), sum_value=sum(mine))
        yield summary
        age = GaugeMetricFamily(
            "gtc_worker_heartbeat_age_seconds",
            "Seconds since a running job's worker last beat.",
            labels=["job_id"],
        )
        for job_id, beat in beats:
            if beat is not None:
                age.add_metric([str(job_id)], (now - _naive(beat)).total_seconds())
        yield age
        depth = GaugeMetricFamily(
            "gtc_queue_depth", "Training tasks waiting in the broker (-1: unreachable)."
        )
        try:
            depth.add_metric([], queue.depth())
        except Exception:  # the scrape still reports everything else
            depth.add_metric([], -1)
        yield depth
        supervisor = getattr(self._app.state, "worker_supervisor", None)  # only under `gtcorrect serve`
        if supervisor is not None:
            up = GaugeMetricFamily("gtc_embedded_worker_up", "1 while the embedded worker process runs.")
            up.add_metric([], 1.0 if supervisor.alive() else 0.0)
            yield up
            restarts = CounterMetricFamily(
                "gtc_embedded_worker_restarts", "Times the embedded worker was started again after it died."
            )
            restarts.add_metric([], supervisor.restarts)
            yield restarts


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


class RequestMetrics:
    """ASGI middleware: counts every HTTP request by route template (not by path: ids would explode the
    label set) and times it."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "gtc_http_requests", "HTTP requests served.", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "gtc_http_request_duration_seconds",
            "Time to serve an HTTP request.",
            ["method", "route"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # A mounted app (the docs' and the review page's assets) has a mount path, not a route.
            template = getattr(route, "path", None) or _mount(scope) or "unmatched"
            template = _CONVERTOR.sub("}", template)  # "{batch_id:uuid}" as the API documents it
            method = scope.get("method", "")
            self.requests.labels(method, template, str(status)).inc()
            self.latency.labels(method, template).observe(time.perf_counter() - start)


def _mount(scope: Scope) -> str | None:
    """'{mount}/{path}' for a request served by a mounted sub-application (static assets)."""
    root = scope.get("root_path") or ""
    app_root = scope.get("app_root_path")
    mounted = root[len(app_root) :] if isinstance(app_root, str) and root.startswith(app_root) else root
    return f"{mounted}/{{path}}" if mounted else None


def install(app: FastAPI) -> None:
    """Count requests from now on; /metrics reads the state once the app has started."""
    registry = CollectorRegistry()
    registry.register(_State(app))
    app.state.metrics_registry = registry
    app.add_middleware(RequestMetrics, registry=registry)
    app.include_router(router)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
