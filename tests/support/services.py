"""Throwaway PostgreSQL databases, Redis databases and S3 buckets for one test run."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import redis
from minio import Minio
from minio.deleteobjects import DeleteObject
from sqlalchemy import Engine, create_engine, text

from app.db.models import Base
from app.settings import Settings
from app.storage.s3 import S3Store
from tests.support.s3server import S3Server

PG_SERVER = os.environ.get("GTC_TEST_PG_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")
PG_ADMIN_DB = os.environ.get("GTC_TEST_PG_ADMIN_DB", "postgres")
REDIS_SERVER = os.environ.get("GTC_TEST_REDIS_SERVER", "redis://127.0.0.1:6379")
REDIS_DB_NUMBERS = range(1, 16)  # db 0 holds the claims below, so it is never handed out


def _admin_engine() -> Engine:
    return create_engine(f"{PG_SERVER}/{PG_ADMIN_DB}", isolation_level="AUTOCOMMIT")


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create ``gtc_test_<hex>``, yield its URL, then drop it (terminating leftover connections)."""
    name = f"gtc_test_{secrets.token_hex(6)}"
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        raise RuntimeError(f"cannot create a test database on {PG_SERVER}: {exc}") from exc
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def truncate_all(engine: Engine) -> None:
    """Empty every table of the data model (``alembic_version`` is not in it) in one statement."""
    names = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        # A connection left open by a test must not hang the whole run.
        conn.execute(text("SET LOCAL lock_timeout = '30s'"))
        conn.execute(text(f"TRUNCATE {names} CASCADE"))


@contextlib.contextmanager
def claimed_redis_db() -> Iterator[str]:
    """A Redis database number that no other concurrent test run holds, flushed before and after."""
    control = redis.Redis.from_url(f"{REDIS_SERVER}/0")
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    number = None
    try:
        for candidate in REDIS_DB_NUMBERS:
            # The claim expires so a crashed run does not hold its database forever.
            if control.set(f"gtcorrect:test-redis-db:{candidate}", token, nx=True, ex=6 * 3600):
                number = candidate
                break
        if number is None:
            raise RuntimeError(
                f"all Redis test databases {list(REDIS_DB_NUMBERS)} are claimed on {REDIS_SERVER}"
            )
        url = f"{REDIS_SERVER}/{number}"
        client = redis.Redis.from_url(url)
        client.flushdb()
        try:
            yield url
        finally:
            client.flushdb()
            client.close()
    finally:
        if number is not None and control.get(f"gtcorrect:test-redis-db:{number}") == token.encode():
            control.delete(f"gtcorrect:test-redis-db:{number}")
        control.close()


def minio_client(server: S3Server) -> Minio:
    return Minio(
        server.endpoint, server.access_key, server.secret_key, secure=server.secure, region=server.region
    )


def remove_bucket(server: S3Server, bucket: str) -> None:
    """Empty and remove ``bucket`` (the server refuses to delete a non-empty one)."""
    client = minio_client(server)
    if not client.bucket_exists(bucket):
        return
    names = [o.object_name for o in client.list_objects(bucket, recursive=True) if o.object_name]
    errors = list(client.remove_objects(bucket, (DeleteObject(n) for n in names)))
    if errors:
        raise RuntimeError(f"could not empty bucket {bucket!r}: {errors[0]}")
    client.remove_bucket(bucket)


def stack_settings(data_dir: Path, pg_url: str, redis_url: str, server: S3Server, prefix: str) -> Settings:
    """Settings for Postgres + Redis + a new, empty bucket (created here) on ``server``."""
    settings = Settings(
        environment="test",
        data_dir=data_dir,
        database_url=pg_url,
        broker_url=redis_url,
        storage="s3",
        s3_endpoint=server.endpoint,
        s3_access_key=server.access_key,
        s3_secret_key=server.secret_key,
        s3_bucket=f"{prefix}-{secrets.token_hex(6)}",
        s3_secure=server.secure,
        s3_region=server.region,
    )
    S3Store(
        server.endpoint,
        server.access_key,
        server.secret_key,
        settings.s3_bucket,
        server.secure,
        server.region,
    ).ensure_bucket()
    return settings
