"""Service settings from ``GTC_*`` environment variables (pydantic-settings), documented in ``.env.example``.

``get_settings()`` builds them once per process and validates them at start-up; nothing is built at
import time, so tests construct ``Settings(...)`` directly. With no variables set the service runs
embedded: SQLite, a local object directory and a filesystem Celery broker, all under ``data_dir``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from gtcorrect.config import ConfigLimits

PLACEHOLDER_SECRETS = frozenset({"change-me", "changeme", ""})
FILESYSTEM_BROKER = "filesystem://"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GTC_", extra="ignore", frozen=True)

    environment: str = "development"
    data_dir: Path = Path(".gtcorrect")

    database_url: str | None = None
    broker_url: str | None = None

    storage: Literal["local", "s3"] = "local"
    local_dir: Path | None = None
    s3_endpoint: str = "localhost:9000"
    s3_access_key: str = "gtcorrect"
    s3_secret_key: str = "change-me"
    s3_bucket: str = "gtcorrect"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    # How long a call waits out an outage of the object store (app.retry) before it gives up: the API's
    # requests (then a 503 with Retry-After) and the worker's (then its job goes back to the queue and
    # resumes from its checkpoint). The worker also waits this long for the database.
    api_retry_s: float = Field(default=5.0, ge=0, le=60)
    worker_retry_s: float = Field(default=120.0, ge=0, le=3600)

    # Above the longest job: Redis redelivers an unacked task after this, so a shorter value runs it twice.
    visibility_timeout_s: int = Field(default=43200, gt=0)
    # A running job whose worker has not beaten for this long is abandoned (app.services.liveness): the
    # sweeper re-sends it and a live worker resumes it from its last checkpoint. Workers beat 4x as often.
    heartbeat_stale_s: int = Field(default=45, ge=4)
    max_attempts: int = Field(default=3, ge=1)
    # The API's sweeper re-sends lost or orphaned jobs this often (seconds); 0 turns it off.
    sweep_interval_s: float = Field(default=15.0, ge=0)
    # A queued job nobody claimed for this long is sent again (its message may have been lost).
    queued_resend_s: int = Field(default=900, gt=0)

    # What one job may ask for (gtcorrect.config.ConfigLimits); beyond them: a 422 naming the field.
    max_epochs: int = Field(default=500, ge=1)
    max_image_size: int = Field(default=1024, ge=32)
    max_batch_size: int = Field(default=256, ge=2)
    max_num_workers: int = Field(default=8, ge=0)
    # Memory one training step of a job may need (gtcorrect.config.training_memory_bytes), checked at submit.
    max_train_memory_gb: float = Field(default=40.0, gt=0)
    # A job still training this long after it first started fails with a clear error (retries included).
    job_time_limit_s: int = Field(default=48 * 3600, gt=0)
    # Queued + running jobs one project may have at once; one more is a 429.
    max_active_jobs: int = Field(default=8, ge=1)

    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    # Any body that is not an upload (JSON): a job's config, a decision, a dataset. Far above what the API
    # needs, far below what would let a client tie up memory and the event loop.
    max_json_bytes: int = Field(default=1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=50_000_000, gt=0)
    # Bytes the API holds for decoding at once over all its requests (one image of each request at a
    # time, counted from its header: file bytes + 3 x width x height x bytes per pixel); a request that
    # would pass it waits, then gets a 503. An image costing more than all of it decodes alone.
    max_decode_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_zip_entries: int = Field(default=10_000, gt=0)
    max_zip_ratio: int = Field(default=100, gt=0)
    model_cache_size: int = Field(default=4, ge=1)
    # Concurrent segmentation requests for one model share a forward pass: up to this many images
    # (1: each alone), waiting at most this long for requests that are still decoding theirs.
    infer_max_batch: int = Field(default=8, ge=1, le=256)
    infer_batch_window_ms: float = Field(default=5.0, ge=0, le=1000)
    # API keys and served models looked up this long ago are not looked up again (0: every request
    # reads them): a key revoked in the database stops working within this time (app.services.recent).
    lookup_cache_seconds: float = Field(default=5.0, ge=0, le=3600)

    device: str = "auto"

    # "json": one JSON object per log line (time, level, logger, message, exception) from the API, the
    # worker and `gtcorrect serve`, for a log collector; "text": the usual lines.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Signs the review pages' session cookies. Unset: a random secret per API process, so sessions end
    # when the API restarts (set it when several API processes serve one site).
    session_secret: str | None = None
    session_ttl_s: int = Field(default=12 * 3600, ge=60)

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        strict = self.environment != "development"
        placeholder = self.s3_secret_key.strip().lower() in PLACEHOLDER_SECRETS
        if placeholder and strict and self.storage == "s3":
            raise ValueError(
                f"GTC_S3_SECRET_KEY is the placeholder {self.s3_secret_key!r}; "
                f"set a real secret when GTC_ENVIRONMENT={self.environment!r}"
            )
        password = make_url(self.database_url).password if self.database_url else None
        if strict and password is not None and str(password).strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError(
                f"the password in GTC_DATABASE_URL (POSTGRES_PASSWORD in compose) is the placeholder "
                f"{password!r}; set a real one when GTC_ENVIRONMENT={self.environment!r}"
            )
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"GTC_DEVICE must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        return self

    def config_limits(self) -> ConfigLimits:
        return ConfigLimits(
            max_epochs=self.max_epochs,
            max_image_size=self.max_image_size,
            max_batch_size=self.max_batch_size,
            max_num_workers=self.max_num_workers,
            max_train_memory_bytes=int(self.max_train_memory_gb * 1024**3),
        )

    # The resolved values below are what every consumer should read; the raw fields may be None.

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir}/gtcorrect.db"

    def safe_database_url(self) -> str:
        """The database URL with its password masked, for messages and logs."""
        return make_url(self.resolved_database_url()).render_as_string(hide_password=True)

    def resolved_broker_url(self) -> str:
        return self.broker_url or FILESYSTEM_BROKER

    def resolved_local_dir(self) -> Path:
        return self.local_dir if self.local_dir is not None else self.data_dir / "objects"

    @property
    def broker_dir(self) -> Path:
        """Where the embedded filesystem broker keeps its message files."""
        return self.data_dir / "broker"

    @property
    def uses_sqlite(self) -> bool:
        return self.resolved_database_url().startswith("sqlite")

    @property
    def uses_filesystem_broker(self) -> bool:
        return self.resolved_broker_url().startswith("filesystem")

    @property
    def is_embedded(self) -> bool:
        """SQLite and a filesystem broker: one machine, one command, no external services."""
        return self.uses_sqlite and self.uses_filesystem_broker

    def broker_transport_options(self) -> dict[str, Any]:
        """Celery ``broker_transport_options`` for the resolved broker.

        For the filesystem broker this creates the folders (kombu does not) and points producer and
        consumer at the same queue folder, so the API and the embedded worker share one queue.
        """
        if self.uses_filesystem_broker:
            queue = self.broker_dir / "queue"
            processed = self.broker_dir / "processed"
            control = self.broker_dir / "control"
            for folder in (queue, processed, control):
                folder.mkdir(parents=True, exist_ok=True)
            return {
                "data_folder_in": str(queue),
                "data_folder_out": str(queue),
                "processed_folder": str(processed),
                "control_folder": str(control),
                "store_processed": False,
            }
        return {"visibility_timeout": self.visibility_timeout_s}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
