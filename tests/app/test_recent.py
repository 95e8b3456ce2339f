"""Rows kept a moment for the requests that follow (app.services.recent), on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import ApiKey
from app.services import projects
from app.services.recent import RecentRows


@pytest.fixture
def checkouts(db_engine: Engine) -> Iterator[list[object]]:
    """Every connection the engine hands out while the test runs (any SQL at all needs one)."""
    seen: list[object] = []

    def record(*args: object) -> None:
        seen.append(args)

    event.listen(db_engine, "checkout", record)
    yield seen
    event.remove(db_engine, "checkout", record)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _remembered(factory: sessionmaker[Session], recent: RecentRows[ApiKey], name: str) -> str:
    with factory.begin() as session:
        _, key = projects.create_project(session, name)
    with factory() as session:
        row = projects.authenticate_key(session, key)
        attached = recent.remember(session, projects.key_digest(key), row, row.project)
        assert attached in session and attached.project in session and attached.project.name == name
    return key


def test_a_kept_key_comes_back_with_its_project_in_another_session_without_the_database(
    db_session_factory: sessionmaker[Session], checkouts: list[object]
) -> None:
    recent: RecentRows[ApiKey] = RecentRows(5.0)
    key = _remembered(db_session_factory, recent, "kept")
    checkouts.clear()
    with db_session_factory() as first, db_session_factory() as second:
        a = recent.get(first, projects.key_digest(key))
        b = recent.get(second, projects.key_digest(key))
        assert a is not None and b is not None and a is not b  # each request its own instances
        assert a in first and b in second and a.project in first
        assert a.project.name == b.project.name == "kept" and a.id == b.id
    assert checkouts == []
    with db_session_factory() as session:
        assert recent.get(session, projects.key_digest(key + "x")) is None


def test_a_kept_row_expires_ttl_seconds_after_its_lookup(db_session_factory: sessionmaker[Session]) -> None:
    clock = Clock()
    recent: RecentRows[ApiKey] = RecentRows(5.0, clock=clock)
    key = _remembered(db_session_factory, recent, "expires")
    with db_session_factory() as session:
        clock.now += 4.9
        assert recent.get(session, projects.key_digest(key)) is not None  # reading does not extend it
        clock.now += 0.1
        assert recent.get(session, projects.key_digest(key)) is None
    assert len(recent) == 0


def test_ttl_zero_keeps_nothing(db_session_factory: sessionmaker[Session]) -> None:
    recent: RecentRows[ApiKey] = RecentRows(0.0)
    key = _remembered(db_session_factory, recent, "off")
    assert len(recent) == 0
    with db_session_factory() as session:
        assert recent.get(session, projects.key_digest(key)) is None


def test_forget_and_the_bound_on_kept_rows(db_session_factory: sessionmaker[Session]) -> None:
    recent: RecentRows[ApiKey] = RecentRows(60.0, max_items=2)
    keys = [_remembered(db_session_factory, recent, f"p{i}") for i in range(3)]
    with db_session_factory() as session:
        assert recent.get(session, projects.key_digest(keys[0])) is None  # the least recently used went
        kept = recent.get(session, projects.key_digest(keys[1]))
        assert kept is not None
        recent.forget(lambda row: row.project.name == "p1")
        assert recent.get(session, projects.key_digest(keys[1])) is None
        assert recent.get(session, projects.key_digest(keys[2])) is not None
    with pytest.raises(ValueError, match="ttl_s"):
        RecentRows(-1.0)
