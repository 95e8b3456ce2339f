"""API keys through /v1/keys and `gtcorrect keys`: issue, list, revoke, each recorded with who and when;
a revoked key stops working at once; the project's last active key cannot be revoked over the API."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from tests.api.conftest import assert_problem
from tests.support.env import settings_env

pytestmark = pytest.mark.integration


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_issue_list_and_revoke_a_key_with_who_and_when(client: TestClient, auth: dict[str, str]) -> None:
    (first,) = client.get("/v1/keys", headers=auth).json()["items"]
    assert first["revoked_at"] is None and "key" not in first and "key_hash" not in first

    made = client.post("/v1/keys", json={"name": "ci-pipeline"}, headers=auth)
    assert made.status_code == 201, made.text
    second = made.json()
    assert second["key"].startswith(second["prefix"]) and second["name"] == "ci-pipeline"
    assert second["created_by"] == f"key {first['prefix']} (default)"
    assert made.headers["location"] == f"/v1/keys/{second['id']}"
    assert client.get("/v1/datasets", headers=_bearer(second["key"])).status_code == 200

    listed = client.get("/v1/keys", headers=auth).json()
    assert listed["total"] == 2 and all("key" not in k for k in listed["items"])

    revoked = client.post(f"/v1/keys/{second['id']}/revoke", json={"note": "pipeline retired"}, headers=auth)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_by"] == f"key {first['prefix']} (default)"
    assert revoked.json()["revoke_note"] == "pipeline retired" and revoked.json()["revoked_at"]
    # At once, although the key was looked up a moment ago (the lookup cache forgets it).
    assert (
        "revoked" in assert_problem(client.get("/v1/datasets", headers=_bearer(second["key"])), 401)["detail"]
    )
    again = assert_problem(client.post(f"/v1/keys/{second['id']}/revoke", json={}, headers=auth), 409)
    assert "already revoked" in again["detail"]


def test_the_last_active_key_and_other_projects_keys_are_refused(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    (mine,) = client.get("/v1/keys", headers=auth).json()["items"]
    last = assert_problem(client.post(f"/v1/keys/{mine['id']}/revoke", json={}, headers=auth), 409)
    assert "last active key" in last["detail"]
    assert_problem(client.post(f"/v1/keys/{mine['id']}/revoke", json={}, headers=other_auth), 404)
    assert client.get("/v1/keys", headers=other_auth).json()["total"] == 1  # only its own
    assert_problem(client.post("/v1/keys", json={"nmae": "typo"}, headers=auth), 422)


def test_the_operator_cli_issues_lists_and_revokes(settings: Settings, db_session_factory: object) -> None:
    env = settings_env(settings)

    def gtc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True, timeout=120
        )

    created = gtc("admin", "create-project", "clinic-x")
    assert created.returncode == 0, created.stderr
    issued = gtc("keys", "create", "--project", "clinic-x", "--name", "laptop", "--by", "ops:ana")
    assert issued.returncode == 0, issued.stderr
    key = issued.stdout.strip().splitlines()[-1]
    prefix = key[:12]
    revoked = gtc("keys", "revoke", prefix, "--note", "laptop lost", "--by", "ops:ben")
    assert revoked.returncode == 0, revoked.stderr
    listed = gtc("keys", "list", "--project", "clinic-x")
    assert listed.returncode == 0, listed.stderr
    default_line, laptop_line = listed.stdout.strip().splitlines()
    assert "clinic-x" in default_line and "active" in default_line and "by cli:" in default_line
    assert laptop_line.startswith(prefix) and "by ops:ana" in laptop_line
    assert "revoked" in laptop_line and "by ops:ben (laptop lost)" in laptop_line
    assert key not in listed.stdout
    unknown = gtc("keys", "revoke", "gtc_nosuchkey")
    assert unknown.returncode == 2 and "no API key" in unknown.stderr
