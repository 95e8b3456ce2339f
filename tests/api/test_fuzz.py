"""Property-based fuzzing of every operation in the app's OpenAPI document with schemathesis.

Runs in-process (ASGI) against the real Postgres, Redis and S3 server, with a valid API key. Path ids are
swapped for ids that exist (a dataset with a sample, a queued job) so that generated queries, forms and
files reach the services instead of stopping at 404. Checks: no 5xx, responses match their documented
schema, and every status code is documented. Bounded to a few examples per operation to fit CI.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from sqlalchemy.orm import Session, sessionmaker

from app.main import create_app
from app.settings import Settings
from tests.api.conftest import files_part, image_png, mask_png

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 8
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


@dataclass
class Seeded:
    app: FastAPI
    auth: dict[str, str]
    ids: dict[str, str]  # path parameter name -> an id that exists


def _seed(client: TestClient, auth: dict[str, str]) -> dict[str, str]:
    body = {"name": "fuzz", "label_map": {"0": "background", "1": "polyp"}}
    dataset = client.post("/v1/datasets", json=body, headers=auth).json()["id"]
    upload = client.post(
        f"/v1/datasets/{dataset}/images", files=files_part({"a.png": image_png(16, 16)}), headers=auth
    )
    batch = client.post(
        f"/v1/datasets/{dataset}/annotation-batches",
        data={"annotator": "fuzz"},
        files=files_part({"a.png": mask_png(16, 16)}),
        headers=auth,
    )
    job = client.post("/v1/jobs", json={"dataset_id": dataset}, headers=auth)
    assert (upload.status_code, batch.status_code, job.status_code) == (201, 201, 202), job.text
    return {
        "dataset_id": dataset,
        "sample_id": upload.json()["files"][0]["id"],
        "batch_id": batch.json()["id"],
        "job_id": job.json()["id"],
    }


@pytest.fixture
def seeded(
    settings: Settings, auth: dict[str, str], db_session_factory: sessionmaker[Session]
) -> Iterator[Seeded]:
    app = create_app(settings)
    with TestClient(app) as client:  # runs the lifespan: app.state holds the engine, store and queue
        yield Seeded(app, auth, _seed(client, auth))


def _operations() -> list[tuple[str, str]]:
    # The document does not depend on settings or state, so an unstarted app lists the operations.
    paths = create_app(Settings()).openapi()["paths"]
    return [(method.upper(), path) for path, operations in paths.items() for method in operations]


@pytest.mark.parametrize(("method", "path"), _operations(), ids=[f"{m} {p}" for m, p in _operations()])
def test_operation_conforms_to_its_schema(seeded: Seeded, method: str, path: str) -> None:
    # schemathesis.pytest.from_fixture breaks on pytest 9 (it reads Item._nodeid), so each operation's
    # strategy drives Hypothesis directly; the checks are the same ones call_and_validate runs.
    operation = schemathesis.openapi.from_asgi("/openapi.json", seeded.app)[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same examples on every run: a CI failure reproduces locally
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        if method != "DELETE":  # deleting the seeded dataset would turn the rest of the run into 404s
            _use_seeded_ids(case, seeded.ids)
        case.call_and_validate(headers=seeded.auth, checks=CHECKS)

    run()


def _use_seeded_ids(case: schemathesis.Case, ids: dict[str, str]) -> None:
    """Swap well-formed ids for existing ones; malformed ids must still reach the 422 path."""
    for name, value in (case.path_parameters or {}).items():
        if name in ids and _valid_uuid(value):
            case.path_parameters[name] = ids[name]


def _valid_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
