"""A key and a model looked up a moment ago are not looked up again (app.services.recent): what that saves
and where it stops, through the API on real Postgres, Redis and S3."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import ApiKey, utcnow
from app.db.session import session_scope
from app.main import create_app
from app.services import projects
from app.services.recent import RecentRows
from app.settings import Settings
from tests.api.conftest import Finished, assert_problem, files_part, image_png


def _segment(client: TestClient, model_id: str, auth: dict[str, str]) -> int:
    upload = files_part({"x.png": image_png(20, 24)}, "file")
    return client.post(f"/v1/models/{model_id}/segment", files=upload, headers=auth).status_code


def _revoke(factory: sessionmaker[Session], auth: dict[str, str]) -> None:
    digest = projects.key_digest(auth["Authorization"].removeprefix("Bearer "))
    with session_scope(factory) as session:
        session.execute(update(ApiKey).where(ApiKey.key_hash == digest).values(revoked_at=utcnow()))


@pytest.fixture
def checkouts(client: TestClient) -> Iterator[list[object]]:
    """Every database connection the API takes while the test runs (any SQL at all needs one)."""
    seen: list[object] = []

    def record(*args: object) -> None:
        seen.append(args)

    engine = client.app.state.engine  # type: ignore[attr-defined]
    event.listen(engine, "checkout", record)
    yield seen
    event.remove(engine, "checkout", record)


def test_a_repeated_segment_request_does_not_touch_the_database(
    client: TestClient, auth: dict[str, str], finished: Finished, checkouts: list[object]
) -> None:
    assert _segment(client, finished.model_id, auth) == 200
    assert checkouts  # the first request looked the key and the model up
    checkouts.clear()
    assert _segment(client, finished.model_id, auth) == 200
    assert checkouts == []


def test_a_revoked_key_works_until_its_lookup_expires_then_is_refused(
    client: TestClient, auth: dict[str, str], finished: Finished, db_session_factory: sessionmaker[Session]
) -> None:
    now = [0.0]
    client.app.state.recent_keys = RecentRows(5.0, clock=lambda: now[0])  # type: ignore[attr-defined]
    assert _segment(client, finished.model_id, auth) == 200
    _revoke(db_session_factory, auth)
    now[0] = 4.9
    assert _segment(client, finished.model_id, auth) == 200
    now[0] = 5.0
    upload = files_part({"x.png": image_png(20, 24)}, "file")
    refused = client.post(f"/v1/models/{finished.model_id}/segment", files=upload, headers=auth)
    assert "revoked" in assert_problem(refused, 401)["detail"]


def test_with_lookups_kept_zero_seconds_a_revoked_key_is_refused_at_once(
    settings: Settings, auth: dict[str, str], finished: Finished, db_session_factory: sessionmaker[Session]
) -> None:
    with TestClient(create_app(settings.model_copy(update={"lookup_cache_seconds": 0.0}))) as client:
        assert _segment(client, finished.model_id, auth) == 200
        _revoke(db_session_factory, auth)
        assert _segment(client, finished.model_id, auth) == 401


def test_a_deleted_dataset_s_model_is_not_served_and_a_kept_model_stays_its_project_s(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], finished: Finished, dataset_id: str
) -> None:
    assert _segment(client, finished.model_id, auth) == 200
    assert _segment(client, finished.model_id, other_auth) == 404  # kept, yet not another project's
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 204
    assert _segment(client, finished.model_id, auth) == 404
    assert _segment(client, str(uuid.uuid4()), auth) == 404
