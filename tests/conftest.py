"""Shared fixtures. Names here are a contract with every test module; keep them stable.

Integration fixtures (real services on loopback; tests using them are marked ``integration``
automatically, mark them explicitly too):
- ``s3_server`` (session): a SeaweedFS ``weed mini`` S3 server; ``.endpoint`` ("127.0.0.1:port"),
  ``.access_key``, ``.secret_key``, ``.region``, ``.secure``.
- ``pg_url`` (session): URL of a fresh PostgreSQL database ``gtc_test_<hex>`` migrated to head; dropped
  at the end.
- ``redis_url`` (session): ``redis://127.0.0.1:6379/<n>``, a db number claimed for this run, flushed
  at start and end.
- ``settings`` (function): ``Settings`` for the real services: Postgres (``pg_url``), Redis broker,
  S3 storage with a fresh bucket per test (created, then emptied and removed), ``environment="test"``,
  ``data_dir`` in ``tmp_path``.
- ``settings_env`` (function): ``settings`` rendered as a ``GTC_*`` environment dict for subprocesses;
  for other Settings objects call ``tests.support.env.settings_env(settings)``.
- ``db_engine`` (session) / ``db_session_factory`` (function): an engine and ``sessionmaker`` on
  ``pg_url``; every table is TRUNCATEd after each test that used the factory.

Unit fixtures (no services):
- ``embedded_settings`` (function): default embedded ``Settings`` (SQLite migrated to head, local
  objects, filesystem broker) under ``tmp_path``.
- ``store`` (function, parametrised "local"/"s3"): an ``ObjectStore`` of each adapter, empty; the
  "s3" case is an integration test.
- ``s3_proxy`` (function): a ``tests.support.proxy.Proxy`` in front of ``settings``' S3 server, to cut
  and restore (``proxied_store`` reaches the bucket through it).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.db.session import make_engine, make_session_factory, upgrade
from app.settings import Settings
from app.storage import ObjectStore
from app.storage.local import LocalStore
from app.storage.s3 import S3Store
from tests.support.env import settings_env as render_settings_env
from tests.support.proxy import Proxy, proxy_to_s3
from tests.support.s3server import S3Server, run_s3_server
from tests.support.services import (
    claimed_redis_db,
    fresh_postgres_database,
    remove_bucket,
    stack_settings,
    truncate_all,
)

INTEGRATION_FIXTURES = frozenset(
    {"s3_server", "pg_url", "redis_url", "settings", "db_session_factory", "db_engine"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that starts real services is an integration test whether or not its author said so.
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        uses_s3_store = "store" in fixtures and callspec is not None and callspec.params.get("store") == "s3"
        if fixtures & INTEGRATION_FIXTURES or uses_s3_store:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with run_s3_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with claimed_redis_db() as url:
        yield url


def _fresh_bucket_name() -> str:
    return f"gtc-test-{secrets.token_hex(6)}"


@pytest.fixture
def settings(tmp_path: Path, pg_url: str, redis_url: str, s3_server: S3Server) -> Iterator[Settings]:
    configured = stack_settings(tmp_path / "gtcorrect", pg_url, redis_url, s3_server, "gtc-test")
    yield configured
    remove_bucket(s3_server, configured.s3_bucket)


@pytest.fixture
def settings_env(settings: Settings) -> dict[str, str]:
    return render_settings_env(settings)


@pytest.fixture(scope="session")
def db_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_session_factory(db_engine: Engine) -> Iterator[sessionmaker[Session]]:
    yield make_session_factory(db_engine)
    truncate_all(db_engine)


@pytest.fixture
def embedded_settings(tmp_path: Path) -> Settings:
    configured = Settings(data_dir=tmp_path / "gtcorrect")
    upgrade(configured.resolved_database_url())
    return configured


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "objects")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    bucket = _fresh_bucket_name()
    s3 = S3Store(server.endpoint, server.access_key, server.secret_key, bucket, server.secure, server.region)
    s3.ensure_bucket()
    yield s3
    remove_bucket(server, bucket)


@pytest.fixture
def s3_proxy(settings: Settings) -> Iterator[Proxy]:
    with proxy_to_s3(settings) as proxy:
        yield proxy
