"""The lifecycle of API keys and of the browser sessions signed in with them: issue, list, revoke (each
recorded with who did it and when), and signing out for good.

Used by ``gtcorrect keys`` (an operator, any project) and by ``/v1/keys`` (a project's own keys). A revoked
key stops working at once in the process that revoked it and within ``GTC_LOOKUP_CACHE_SECONDS`` in the
others; its browser sessions end with it (every page request reads the key row).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session, contains_eager

from app.db.models import ApiKey, EndedSession, Project, utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.services.projects import LOOKUP_CHARS, issue_key
from app.services.sessions import BrowserSession
from app.services.uploads import text_problem


def _text(field: str, value: str, limit: int) -> str:
    value = value.strip()
    problem = text_problem(value, allow_newlines=field == "note")
    if problem is not None:
        raise InvalidInput(f"{field} {problem}.", field=field)
    if len(value) > limit:
        raise InvalidInput(f"{field} has {len(value)} characters, above the limit of {limit}.", field=field)
    return value


def project_by_name(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name.strip()))
    if project is None:
        raise NotFound(f"no project named {name!r}.")
    return project


def create_key(session: Session, project: Project, *, name: str, by: str) -> tuple[ApiKey, str]:
    """A new key of ``project``: (its row, the plaintext, shown once)."""
    name, by = _text("name", name, 200) or "default", _text("by", by, 200)
    plaintext = issue_key(session, project, name, by)
    return find_key(session, plaintext[:LOOKUP_CHARS], project), plaintext


def _with_project() -> Select[ApiKey]:
    joined = select(ApiKey).join(Project, Project.id == ApiKey.project_id)
    return joined.options(contains_eager(ApiKey.project))


def list_keys(session: Session, project: Project | None = None) -> list[ApiKey]:
    """Every key (of ``project``), oldest first, with its project loaded."""
    query = _with_project()
    if project is not None:
        query = query.where(ApiKey.project_id == project.id)
    return list(session.scalars(query.order_by(ApiKey.created_at, ApiKey.prefix)).all())


def find_key(session: Session, ref: str, project: Project | None = None) -> ApiKey:
    """A key by its id or its prefix (what ``list`` shows), within ``project`` when given."""
    ref = ref.strip()
    try:
        where = ApiKey.id == uuid.UUID(ref)
    except ValueError:
        where = ApiKey.prefix == ref[:LOOKUP_CHARS]
    row = session.scalar(_with_project().where(where))
    if row is None or (project is not None and row.project_id != project.id):
        raise NotFound(f"no API key {ref!r}" + (" in this project." if project is not None else "."))
    return row


def revoke_key(session: Session, key: ApiKey, *, by: str, note: str = "", keep_one: bool = False) -> ApiKey:
    """Revoke ``key``, recording who and why. ``keep_one``: refuse to revoke the project's last active key
    (through the API that would lock the project out; an operator at the CLI may)."""
    by, note = _text("by", by, 200), _text("note", note, 2000)
    if key.revoked_at is not None:
        when = key.revoked_at.isoformat()
        raise Conflict(f"API key {key.prefix} was already revoked at {when} by {key.revoked_by}.")
    if keep_one:
        active = [k for k in list_keys(session, key.project) if k.revoked_at is None]
        if [k.id for k in active] == [key.id]:
            raise Conflict(
                f"API key {key.prefix} is the project's last active key: create another first "
                "(POST /v1/keys), or revoke it with `gtcorrect keys revoke` on the server."
            )
    key.revoked_at, key.revoked_by, key.revoke_note = utcnow(), by, note or None
    session.flush()
    return key


def end_session(session: Session, browser: BrowserSession) -> None:
    """Sign a browser session out for good: its cookie is refused from now on, even where it was copied.
    Sessions already past their expiry are forgotten here (their cookies are refused anyway)."""
    now = utcnow()
    session.execute(delete(EndedSession).where(EndedSession.expires_at < now))
    expires = datetime.fromtimestamp(browser.expires_at, UTC)
    if session.get(EndedSession, browser.nonce) is None:
        session.add(EndedSession(nonce=browser.nonce, expires_at=expires))
    session.flush()


def session_ended(session: Session, browser: BrowserSession) -> bool:
    return session.get(EndedSession, browser.nonce) is not None
