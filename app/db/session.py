"""Engines, sessions and schema upgrades.

Services ``flush``; whoever owns the unit of work (a request, a task) commits through
``session_scope``. The schema changes only through Alembic: ``upgrade(url)`` runs ``alembic upgrade
head`` in-process, for the embedded mode at start-up and for tests.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker


def _project_root() -> Path:
    # A source checkout has alembic.ini next to the packages; an installed image runs from its WORKDIR.
    source_root = Path(__file__).resolve().parents[2]
    return source_root if (source_root / "alembic.ini").is_file() else Path.cwd()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # SQLite ignores foreign keys (and so ON DELETE CASCADE) unless asked, per connection.
    # WAL lets the API read while the embedded worker writes.
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``. SQLite: foreign keys on, WAL, usable across threads; Postgres: pre-ping."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False, **kwargs.pop("connect_args", {})}
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def is_outage(exc: BaseException) -> bool:
    """The database could not be reached or dropped the connection (not a statement it refused)."""
    return isinstance(exc, OperationalError | InterfaceError)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: routes return schemas built from rows after the commit.
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block succeeds, roll back when it raises."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    """Alembic config for ``url`` that works from any working directory."""
    root = _project_root()
    ini = root / "alembic.ini"
    if not ini.is_file():
        raise FileNotFoundError(f"alembic.ini not found in {root}; run from the project directory")
    cfg = Config(str(ini))
    cfg.set_main_option("script_location", str(root / "migrations"))
    # ConfigParser treats % as interpolation; URLs may contain %-escaped passwords.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` against ``url``, in-process."""
    if make_url(url).get_backend_name() == "sqlite":
        make_engine(url).dispose()  # creates the parent directory of the database file
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def create_schema_with_alembic(url: str) -> None:
    """Bring the database at ``url`` to the latest schema (alias of ``upgrade(url)``)."""
    upgrade(url)
