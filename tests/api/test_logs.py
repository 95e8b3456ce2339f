"""GTC_LOG_FORMAT=json: every log line is one JSON object, whichever library logged it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from app.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    uvicorn = logging.getLogger("uvicorn.access")
    saved_uvicorn = (uvicorn.handlers[:], uvicorn.propagate)
    yield
    root.handlers[:], root.level = saved
    uvicorn.handlers[:], uvicorn.propagate = saved_uvicorn


def test_json_lines_carry_level_logger_extras_and_the_traceback(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.getLogger("uvicorn.access").addHandler(logging.StreamHandler())  # as uvicorn sets it up
    configure_logging("json", "INFO")
    logging.getLogger("worker.runner").info("job %s: claimed", "abc", extra={"job_id": "abc", "attempt": 2})
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /readyz" 200')
    logging.getLogger("worker.runner").debug("below the level")
    try:
        raise ValueError("bad mask")
    except ValueError:
        logging.getLogger("app.api").exception("request failed")
    lines = capsys.readouterr().err.strip().splitlines()
    claimed, access, failed = (json.loads(line) for line in lines)
    assert claimed["message"] == "job abc: claimed" and claimed["level"] == "INFO"
    assert (claimed["logger"], claimed["job_id"], claimed["attempt"]) == ("worker.runner", "abc", 2)
    assert claimed["time"].endswith("+00:00") and "T" in claimed["time"]
    assert access["logger"] == "uvicorn.access" and "GET /readyz" in access["message"]
    assert failed["level"] == "ERROR" and "ValueError: bad mask" in failed["exc"]


def test_text_leaves_logging_alone(restore_logging: None) -> None:
    before = logging.getLogger().handlers[:]
    configure_logging("text")
    assert logging.getLogger().handlers == before
