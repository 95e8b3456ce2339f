"""Settings: embedded defaults, environment parsing, refusal of placeholder secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from kombu import Connection, Queue
from pydantic import ValidationError

from app.settings import Settings, get_settings
from tests.support.env import settings_env


def test_defaults_are_the_embedded_mode(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.resolved_database_url() == f"sqlite:///{tmp_path}/gtcorrect.db"
    assert s.resolved_broker_url() == "filesystem://"
    assert s.resolved_local_dir() == tmp_path / "objects"
    assert s.is_embedded
    options = s.broker_transport_options()
    assert options["data_folder_in"] == options["data_folder_out"] == str(tmp_path / "broker" / "queue")
    assert Path(options["processed_folder"]).is_dir()


def test_redis_broker_gets_the_visibility_timeout() -> None:
    s = Settings(broker_url="redis://localhost:6379/0", visibility_timeout_s=7200)
    assert not s.is_embedded
    assert s.broker_transport_options() == {"visibility_timeout": 7200}


def test_reads_gtc_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GTC_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("GTC_STORAGE", "s3")
    monkeypatch.setenv("GTC_S3_SECURE", "true")
    monkeypatch.setenv("GTC_MAX_ATTEMPTS", "5")
    s = Settings()
    assert (s.resolved_database_url(), s.storage, s.s3_secure, s.max_attempts) == (
        "postgresql+psycopg://u@h/db",
        "s3",
        True,
        5,
    )
    assert not s.is_embedded


def test_get_settings_is_cached_and_not_built_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("GTC_MODEL_CACHE_SIZE", "7")
    try:
        assert get_settings() is get_settings()
        assert get_settings().model_cache_size == 7
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("secret", ["change-me", "CHANGE-ME", ""])
def test_placeholder_secret_refused_outside_development(secret: str) -> None:
    with pytest.raises(ValidationError, match="GTC_S3_SECRET_KEY is the placeholder"):
        Settings(environment="production", storage="s3", s3_secret_key=secret)
    Settings(environment="development", storage="s3", s3_secret_key=secret)


def test_placeholder_database_password_refused_and_never_printed() -> None:
    url = "postgresql+psycopg://gtcorrect:change-me@db:5432/gtcorrect"
    with pytest.raises(ValidationError, match="password in GTC_DATABASE_URL .* placeholder"):
        Settings(environment="production", database_url=url)
    real = Settings(environment="production", database_url=url.replace("change-me", "s3cr3t-pw"))
    assert "s3cr3t-pw" not in real.safe_database_url() and "***" in real.safe_database_url()
    assert Settings(database_url=url).safe_database_url().startswith("postgresql+psycopg://gtcorrect:***@db")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("storage", "ftp", "storage"),
        ("device", "tpu", "'tpu'"),
        ("max_attempts", 0, "max_attempts"),
        ("visibility_timeout_s", -1, "visibility_timeout_s"),
    ],
)
def test_bad_values_are_named(field: str, value: object, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_settings_env_round_trips(tmp_path: Path) -> None:
    s = Settings(
        environment="test",
        data_dir=tmp_path,
        database_url="postgresql+psycopg://postgres@127.0.0.1:5432/x",
        broker_url="redis://127.0.0.1:6379/3",
        storage="s3",
        s3_secret_key="real-secret",
        s3_secure=True,
        device="cpu",
    )
    env = settings_env(s, base={"PATH": "/bin", "GTC_STALE": "x"})
    assert env["PATH"] == "/bin" and "GTC_STALE" not in env
    assert "GTC_LOCAL_DIR" not in env  # None stays unset, so the default applies
    back = Settings(**{k.removeprefix("GTC_").lower(): v for k, v in env.items() if k.startswith("GTC_")})
    assert back == s


def test_filesystem_broker_options_deliver_a_message(tmp_path: Path) -> None:
    # Producer and consumer in one process must meet in the same folder (the embedded mode).
    s = Settings(data_dir=tmp_path)
    with Connection(s.resolved_broker_url(), transport_options=s.broker_transport_options()) as conn:
        conn.Producer().publish({"job": "42"}, routing_key="train", declare=[Queue("train")])
        with conn.SimpleQueue("train") as queue:
            message = queue.get(timeout=5)
            message.ack()
    assert message.payload == {"job": "42"}
