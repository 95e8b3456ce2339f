"""Signing in to the review pages: the key travels once in a form body; the browser then holds a signed
session cookie that authenticates /v1 calls, with a CSRF token required for every change."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import ApiKey, utcnow
from app.db.session import session_scope
from app.services import sessions
from tests.api.conftest import Finished, assert_problem

pytestmark = pytest.mark.integration


def _sign_in(client: TestClient, key: str, target: str = "/review/") -> str:
    """Sign in; return the CSRF token the review page carries."""
    response = client.post("/review/login", data={"api_key": key, "next": target}, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == target
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and key not in cookie
    page = client.get(target)
    assert page.status_code == 200
    match = re.search(r'data-csrf="([0-9a-f]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


def test_session_cookie_authenticates_the_api_and_changes_need_the_csrf_token(
    client: TestClient, auth: dict[str, str], finished: Finished
) -> None:
    key = auth["Authorization"].removeprefix("Bearer ")
    csrf = _sign_in(client, key, f"/review/jobs/{finished.job_id}")
    report = client.get(f"/v1/jobs/{finished.job_id}/noise-report")  # no Authorization header: the cookie
    assert report.status_code == 200 and report.json()["total"] == 3
    url = f"/v1/jobs/{finished.job_id}/decisions/{finished.samples['c.png']}"
    body = {"decision": "keep_original"}
    refused = assert_problem(client.put(url, json=body), 403)
    assert sessions.CSRF_HEADER in refused["detail"]
    assert_problem(client.put(url, json=body, headers={sessions.CSRF_HEADER: "0" * 64}), 403)
    done = client.put(url, json=body, headers={sessions.CSRF_HEADER: csrf})
    assert done.status_code == 201 and done.json()["reviewer"] == "key default"


def test_sign_in_refuses_bad_keys_forged_cookies_and_other_sites(
    client: TestClient, auth: dict[str, str], db_session_factory: sessionmaker[Session]
) -> None:
    bad = client.post("/review/login", data={"api_key": "gtc_nope-nope-nope"}, follow_redirects=False)
    assert bad.status_code == 401 and "not valid" in bad.text and "set-cookie" not in bad.headers
    # Not signed in: the pages send the browser to the sign-in form.
    assert client.get("/review/", follow_redirects=False).headers["location"].startswith("/review/login")
    key = auth["Authorization"].removeprefix("Bearer ")
    # After sign-in, only a path of these pages is a target: never another site.
    evil = client.post(
        "/review/login", data={"api_key": key, "next": "https://evil.example/"}, follow_redirects=False
    )
    assert evil.headers["location"] == "/review/"
    assert client.get("/review/").status_code == 200
    cookie = client.cookies[sessions.COOKIE]
    key_id, expires, nonce, signature = cookie.split(".")
    client.cookies.set(sessions.COOKIE, f"{key_id}.{int(expires) + 10**6}.{nonce}.{signature}")
    assert_problem(client.get("/v1/datasets"), 401)
    # Revoking the key ends its sessions.
    client.cookies.set(sessions.COOKIE, cookie)
    assert client.get("/v1/datasets").status_code == 200
    with session_scope(db_session_factory) as session:
        row = session.get(ApiKey, uuid.UUID(key_id))
        assert row is not None
        row.revoked_at = utcnow()
    body = assert_problem(client.get("/v1/datasets"), 401)
    assert "revoked" in body["detail"]


def test_signing_out_ends_the_session_on_the_server_even_for_a_copied_cookie(
    client: TestClient, auth: dict[str, str]
) -> None:
    key = auth["Authorization"].removeprefix("Bearer ")
    client.post("/review/login", data={"api_key": key}, follow_redirects=False)
    form = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/review/").text)  # the sign-out form
    assert form is not None
    csrf = form.group(1)
    copied = client.cookies[sessions.COOKIE]  # as a thief, or a second tab, would hold it
    out = client.post("/review/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/review/login"
    client.cookies.set(sessions.COOKIE, copied)  # still signed and unexpired, but signed out
    body = assert_problem(client.get("/v1/datasets"), 401)
    assert "signed out" in body["detail"]
    assert client.get("/review/", follow_redirects=False).headers["location"].startswith("/review/login")
    # Signing in again is a new session that works.
    client.cookies.clear()
    client.post("/review/login", data={"api_key": key}, follow_redirects=False)
    assert client.get("/v1/datasets").status_code == 200
