"""Alembic migrations match ``app.db.models`` and run both ways, on PostgreSQL and SQLite."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from app.db.models import Base
from app.db.session import alembic_config, downgrade, make_engine, upgrade
from tests.support.services import fresh_postgres_database

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_TABLES = {table.name for table in Base.metadata.sorted_tables}


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    # Not pg_url: these tests drop everything, which other tests sharing pg_url must not see.
    with fresh_postgres_database() as url:
        yield url


def _schema_diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def _enum_types(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT typname FROM pg_type WHERE typtype = 'e'")).scalars())


@pytest.mark.integration
def test_postgres_upgrade_downgrade_upgrade(fresh_pg: str) -> None:
    engine = make_engine(fresh_pg)
    try:
        upgrade(fresh_pg)
        assert set(inspect(engine).get_table_names()) == MODEL_TABLES | {"alembic_version"}
        assert _enum_types(engine) == {"batch_status", "job_status", "batch_kind", "review_choice"}

        downgrade(fresh_pg)
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        assert _enum_types(engine) == set()  # a later upgrade would fail on leftover types

        upgrade(fresh_pg)
        assert set(inspect(engine).get_table_names()) == MODEL_TABLES | {"alembic_version"}
    finally:
        engine.dispose()


@pytest.mark.integration
def test_postgres_schema_matches_the_models(fresh_pg: str) -> None:
    upgrade(fresh_pg)
    engine = make_engine(fresh_pg)
    try:
        assert _schema_diff(engine) == []
    finally:
        engine.dispose()


def test_sqlite_upgrade_downgrade_upgrade_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db/gtc.db"
    upgrade(url)
    downgrade(url)
    upgrade(url)
    engine = make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == MODEL_TABLES | {"alembic_version"}
        assert _schema_diff(engine) == []
    finally:
        engine.dispose()


def test_alembic_cli_takes_the_url_from_x_argument(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", "upgrade", "head"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    engine = make_engine(url)
    try:
        assert "training_jobs" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_single_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()) == 1
