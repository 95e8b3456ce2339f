"""Waiting out an outage: ``app.retry.with_retry`` (fake clock) and the S3 adapter behind a proxy that is
cut and restored in front of the real S3 server."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from app.retry import with_retry
from app.settings import Settings
from app.storage.base import ObjectNotFound, StorageUnavailable
from tests.support.proxy import Proxy, proxied_store


class FakeClock:
    def __init__(self) -> None:
        self.now, self.waits = 0.0, []  # type: float, list[float]

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def _flaky(failures: int, error: Exception) -> tuple[list[int], object]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return "ok"

    return calls, call


def test_a_transient_error_is_tried_again_with_growing_waits() -> None:
    clock = FakeClock()
    calls, call = _flaky(4, ConnectionError("down"))
    result = with_retry(call, transient=lambda e: isinstance(e, ConnectionError), window_s=60, what="x",
                        sleep=clock.sleep, clock=clock)  # fmt: skip
    assert result == "ok" and len(calls) == 5
    assert clock.waits == [0.25, 0.5, 1.0, 2.0]


def test_past_the_window_the_last_error_is_raised() -> None:
    clock = FakeClock()
    calls, call = _flaky(1000, ConnectionError("down"))
    with pytest.raises(ConnectionError):
        with_retry(call, transient=lambda e: True, window_s=20, what="x", sleep=clock.sleep, clock=clock)
    assert clock.now <= 20 and max(clock.waits) == 5.0
    assert len(calls) == len(clock.waits) + 1


def test_a_refusal_is_not_tried_again() -> None:
    clock = FakeClock()
    calls, call = _flaky(1, ValueError("refused"))
    with pytest.raises(ValueError):
        with_retry(call, transient=lambda e: isinstance(e, ConnectionError), window_s=60, what="x",
                   sleep=clock.sleep, clock=clock)  # fmt: skip
    assert len(calls) == 1 and clock.waits == []


@pytest.mark.integration
def test_a_request_during_a_short_outage_succeeds_once_the_store_is_back(
    settings: Settings, s3_proxy: Proxy
) -> None:
    store = proxied_store(settings, s3_proxy, retry_s=15)
    store.put("a/1", b"one")
    s3_proxy.cut()
    threading.Timer(1.5, s3_proxy.restore).start()
    started = time.monotonic()
    assert store.get("a/1") == b"one"  # waited out the outage
    store.put("a/2", b"two")
    assert time.monotonic() - started >= 1.4
    assert list(store.list("a/")) == ["a/1", "a/2"]
    with pytest.raises(ObjectNotFound):  # a missing key is an answer, not an outage
        store.get("a/missing")


@pytest.mark.integration
def test_a_long_outage_raises_storage_unavailable_naming_no_address(
    settings: Settings, s3_proxy: Proxy
) -> None:
    store = proxied_store(settings, s3_proxy, retry_s=1.0)
    key = f"secret-prefix/{uuid.uuid4()}"
    s3_proxy.cut()
    for op in (
        lambda: store.get(key),
        lambda: store.put(key, b"x"),
        lambda: list(store.list("secret-prefix/")),
    ):
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as raised:
            op()
        assert time.monotonic() - started < 8  # the window, not the SDK's five-minute timeouts
        message = str(raised.value)
        for secret in (s3_proxy.endpoint, str(s3_proxy.port), settings.s3_bucket, key, "secret-prefix"):
            assert secret not in message
