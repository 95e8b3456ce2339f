"""The attack replay's quick cases on the real stack (uvicorn, prefork Celery, PostgreSQL, Redis, S3 behind
the proxies): strangers' bodies are refused before they are read, and careless clients' mistakes are 422s
naming the field with nothing stored. The 60 s outages and the kills run in ``python -m bench.attack``."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.attack.faults import object_audit
from bench.attack.run import main
from bench.attack.strangers import bodies, mistakes
from bench.attack.target import OUT_DIR, RELIABILITY, target
from bench.load_setup import seed

pytestmark = pytest.mark.integration


def test_strangers_and_mistakes_are_turned_away(tmp_path: Path) -> None:
    with target(tmp_path) as t:
        world = seed(t.direct, t.stack.base_url)
        refused = bodies(t, settle_s=0.2)
        # The statuses, not the timings: memory and /livez figures belong to the benchmark's table.
        assert [r.answer.split(" ")[0] for r in refused] == ["401", "401", "401"], refused
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
