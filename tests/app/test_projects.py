"""API keys: authentication is one query, and its refusals name the reason (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import ApiKey, utcnow
from app.errors import Unauthorized
from app.services import projects


@pytest.fixture
def statements(db_engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    event.listen(db_engine, "before_cursor_execute", record)
    yield seen
    event.remove(db_engine, "before_cursor_execute", record)


def test_a_key_and_its_project_come_in_one_query(
    db_session_factory: sessionmaker[Session], statements: list[str]
) -> None:
    with db_session_factory.begin() as session:
        _, key = projects.create_project(session, "one-query")
    with db_session_factory() as session:
        statements.clear()
        row = projects.authenticate_key(session, key)
        assert row.project is not None and row.project.name == "one-query"
        assert len(statements) == 1 and statements[0].lstrip().upper().startswith("SELECT")
        assert projects.key_by_id(session, row.id).id == row.id


def test_wrong_malformed_and_revoked_keys_are_refused_with_the_reason(
    db_session_factory: sessionmaker[Session],
) -> None:
    with db_session_factory.begin() as session:
        _, key = projects.create_project(session, "refusals")
    with db_session_factory() as session:
        with pytest.raises(Unauthorized, match="malformed: a key starts with 'gtc_'"):
            projects.authenticate_key(session, "nope")
        # A key that does start with gtc_ is not told to start with gtc_.
        with pytest.raises(Unauthorized, match="malformed: it is too short") as short:
            projects.authenticate_key(session, "gtc_abc")
        assert "starts with" not in str(short.value)
        with pytest.raises(Unauthorized, match="not valid"):
            projects.authenticate_key(session, key[:-1] + ("A" if key[-1] != "A" else "B"))
    with db_session_factory.begin() as session:
        row = projects.authenticate_key(session, key)
        row.revoked_at = utcnow()
        key_id = row.id
    with db_session_factory() as session:
        with pytest.raises(Unauthorized, match="revoked"):
            projects.authenticate_key(session, key)
        with pytest.raises(Unauthorized, match="revoked"):
            projects.key_by_id(session, key_id)
        assert session.get(ApiKey, key_id) is not None
