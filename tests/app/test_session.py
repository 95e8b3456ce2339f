"""Engines and units of work on SQLite (embedded mode) and PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Dataset, Project
from app.db.session import alembic_config, make_engine, make_session_factory, session_scope, upgrade
from app.settings import Settings


def _count(factory: sessionmaker[Session], model: type[Project] | type[Dataset]) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def sqlite_factory(embedded_settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(make_engine(embedded_settings.resolved_database_url()))


def test_sqlite_pragmas_are_on_for_every_connection(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/nested/dir/x.db")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert (tmp_path / "nested" / "dir" / "x.db").is_file()
    engine.dispose()


def test_session_scope_commits_on_success(sqlite_factory: sessionmaker[Session]) -> None:
    with session_scope(sqlite_factory) as session:
        session.add(Project(name="alpha"))
    assert _count(sqlite_factory, Project) == 1


def test_session_scope_rolls_back_on_error(sqlite_factory: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError, match="boom"), session_scope(sqlite_factory) as session:
        session.add(Project(name="beta"))
        session.flush()
        raise RuntimeError("boom")
    assert _count(sqlite_factory, Project) == 0


def test_sqlite_enforces_foreign_keys_and_cascades(sqlite_factory: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), session_scope(sqlite_factory) as session:
        session.add(Dataset(project_id=uuid.uuid4(), name="orphan", label_map={"0": "background"}))
    with session_scope(sqlite_factory) as session:
        project = Project(name="gamma")
        session.add(project)
        session.flush()
        session.add(Dataset(project_id=project.id, name="d", label_map={"0": "background"}))
    with session_scope(sqlite_factory) as session:
        session.execute(text("DELETE FROM projects"))
    assert _count(sqlite_factory, Dataset) == 0


def test_upgrade_is_idempotent_on_sqlite(embedded_settings: Settings) -> None:
    url = embedded_settings.resolved_database_url()
    upgrade(url)
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
    engine.dispose()


@pytest.mark.integration
def test_postgres_round_trip_and_truncation_between_tests(
    db_session_factory: sessionmaker[Session],
) -> None:
    # db_session_factory truncates after each test, so nothing from other tests is visible here.
    assert _count(db_session_factory, Project) == 0
    with session_scope(db_session_factory) as session:
        project = Project(name="pg")
        session.add(project)
    with db_session_factory() as session:
        stored = session.get(Project, project.id)
        assert stored is not None and stored.created_at.tzinfo is not None


@pytest.mark.integration
def test_postgres_rollback_leaves_nothing(db_session_factory: sessionmaker[Session]) -> None:
    assert _count(db_session_factory, Project) == 0
    with pytest.raises(IntegrityError), session_scope(db_session_factory) as session:
        session.add_all([Project(name="same"), Project(name="same")])
    assert _count(db_session_factory, Project) == 0
