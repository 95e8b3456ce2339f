"""Alembic environment. URL order: ``config.attributes["url"]`` (in-process, ``app.db.session.upgrade``),
``-x url=...``, ``GTC_DATABASE_URL``, then the Settings default (SQLite under the data directory)."""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool

from app.db.models import Base
from app.db.session import make_engine

config = context.config
target_metadata = Base.metadata

# In-process callers pass the URL as an attribute and keep their own logging (fileConfig would
# disable every logger that exists already, e.g. in a test run).
if config.config_file_name is not None and "url" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    if "url" in config.attributes:
        return str(config.attributes["url"])
    x_url = context.get_x_argument(as_dictionary=True).get("url")
    if x_url:
        return x_url
    env_url = os.environ.get("GTC_DATABASE_URL")
    if env_url:
        return env_url
    from app.settings import Settings

    return Settings().resolved_database_url()


def _configure(**kwargs: object) -> None:
    url = _database_url()
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=url.startswith("sqlite"),
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
