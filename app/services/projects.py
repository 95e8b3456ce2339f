"""Projects and API keys. A key is shown once; only its sha256 and a lookup prefix are stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import Session, contains_eager

from app.db.models import ApiKey, Project
from app.errors import Conflict, InvalidInput, Unauthorized

KEY_PREFIX = "gtc_"
# "gtc_" plus 8 token characters: unique enough to find the row, too short to guess the key.
LOOKUP_CHARS = 12


def key_digest(key: str) -> str:
    """What is stored of a key: its sha256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_project(session: Session, name: str, by: str = "") -> tuple[Project, str]:
    """Create a project with one API key; return the project and the plaintext key (shown once)."""
    name = name.strip()
    if not name:
        raise InvalidInput("project name must not be empty.")
    if session.scalar(select(Project).where(Project.name == name)) is not None:
        raise Conflict(f"a project named {name!r} already exists.")
    project = Project(name=name)
    session.add(project)
    session.flush()
    return project, issue_key(session, project, by=by)


def issue_key(session: Session, project: Project, name: str = "default", by: str = "") -> str:
    """Add another API key to ``project`` (issued ``by`` whom) and return its plaintext."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(project_id=project.id, prefix=key[:LOOKUP_CHARS], key_hash=key_digest(key), name=name)
    row.created_by = by
    session.add(row)
    session.flush()
    return key


def authenticate_key(session: Session, key: str) -> ApiKey:
    """Return the row of ``key``, its ``project`` loaded in the same query; raise ``Unauthorized`` for
    unknown, wrong or revoked keys and for keys whose project is gone."""
    if not key.startswith(KEY_PREFIX):
        raise Unauthorized(f"the API key is malformed: a key starts with {KEY_PREFIX!r}.")
    if len(key) <= LOOKUP_CHARS:
        raise Unauthorized(
            f"the API key is malformed: it is too short ({len(key)} characters; keys are longer)."
        )
    row = session.scalar(_with_project(ApiKey.prefix == key[:LOOKUP_CHARS]))
    if row is None or not hmac.compare_digest(row.key_hash, key_digest(key)):
        raise Unauthorized("the API key is not valid.")
    return _usable(row)


def key_by_id(session: Session, key_id: uuid.UUID) -> ApiKey:
    """The key row a browser session names, with ``authenticate_key``'s checks."""
    row = session.scalar(_with_project(ApiKey.id == key_id))
    if row is None:
        raise Unauthorized("the session's API key no longer exists: sign in again.")
    return _usable(row)


def _with_project(where: ColumnElement[bool]) -> Select[ApiKey]:
    joined = select(ApiKey).outerjoin(Project, Project.id == ApiKey.project_id)
    return joined.options(contains_eager(ApiKey.project)).where(where)


def _usable(row: ApiKey) -> ApiKey:
    if row.revoked_at is not None:
        raise Unauthorized("the API key has been revoked.")
    if row.project is None:  # the outer join found no project row
        raise Unauthorized("the API key's project no longer exists.")
    return row


def authenticate(session: Session, key: str) -> Project:
    """Return the project owning ``key`` (``authenticate_key``'s checks; loaded with the key)."""
    return authenticate_key(session, key).project
