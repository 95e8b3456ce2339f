"""The API's documentation pages in a real browser (Debian's chromium through Playwright), on a live
server with no way out to the internet: every request the pages make must go to the API itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from playwright.sync_api import Browser

from app.main import create_app
from app.settings import Settings
from tests.support.s3server import free_ports
from tests.web.conftest import SHOTS

# ReDoc's footer logo: an <img> that removes itself when it cannot load (offline); nothing else may leave.
COSMETIC = ("https://cdn.redoc.ly/redoc/logo-mini.svg",)


@pytest.fixture
def live_url(embedded_settings: Settings) -> Iterator[str]:
    port = free_ports(1)[0]
    server = uvicorn.Server(
        uvicorn.Config(create_app(embedded_settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.mark.parametrize(
    ("path", "ready", "text"),
    [
        ("/docs", ".opblock", "Start a training job"),
        ("/redoc", "[data-section-id]", "Start a training job"),
    ],
)
def test_docs_render_offline(browser: Browser, live_url: str, path: str, ready: str, text: str) -> None:
    page = browser.new_page()
    outside: list[str] = []
    local = (live_url, f"blob:{live_url}", "data:", *COSMETIC)
    page.on("request", lambda r: None if r.url.startswith(local) else outside.append(r.url))
    page.goto(live_url + path)
    page.wait_for_selector(ready, timeout=30_000)
    assert page.get_by_text(text).first.is_visible() or page.get_by_text(text).count() > 0
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{path.strip('/')}.png"))
    assert outside == [], outside
    page.close()
