"""The attack replay's quick case on the real stack (uvicorn, prefork Celery, PostgreSQL, Redis, S3 behind
the proxies): careless clients' mistakes are 422s naming the field with nothing stored, and every stored
object has its row. Bodies, bombs, 60 s outages and kills run in ``python -m bench.attack``."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.attack.faults import object_audit
from bench.attack.run import main
from bench.attack.strangers import mistakes
from bench.attack.target import OUT_DIR, RELIABILITY, target
from bench.load_setup import seed

pytestmark = pytest.mark.integration


def test_mistakes_are_turned_away_on_the_production_stack(tmp_path: Path) -> None:
    # The mistakes only: the strangers' bodies (290 MB a request) and the rest run in the benchmark; the
    # key-before-body gate has its own tests (tests/api).
    with target(tmp_path) as t:
        world = seed(t.direct, t.stack.base_url)
        answered = mistakes(world)
        assert len(answered) == 6
        assert all(r.met for r in answered), [r for r in answered if not r.met]
        assert object_audit(t) == ([], [])


def test_unknown_cases_are_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--cases", "bodies,teleport"])


def test_the_table_goes_to_the_reliability_page() -> None:
    assert "<!-- attack:start -->" in RELIABILITY.read_text()
    assert OUT_DIR.parent.name == "bench"
