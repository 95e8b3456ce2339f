"""Browser sessions for the review pages: a person signs in once with the project's API key and the
browser then holds a signed cookie, never the key.

The cookie names the API key row (not the key), an expiry and a random nonce, signed with HMAC-SHA256
under the server's session secret. Requests that change something must also send the session's CSRF
token (an HMAC of the nonce, given to the page, not readable from the cookie by another site), so a
page elsewhere cannot make the browser act. Every request checks the key row again: revoking the key
ends its sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

from app.errors import Forbidden, Unauthorized

COOKIE = "gtc_session"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class BrowserSession:
    api_key_id: uuid.UUID
    expires_at: int
    nonce: str

    def csrf_token(self, secret: bytes) -> str:
        return _sign(secret, f"csrf.{self.nonce}")


def _sign(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()


def issue(secret: bytes, api_key_id: uuid.UUID, ttl_s: int) -> tuple[str, BrowserSession]:
    """A new session for the key row: (cookie value, session)."""
    session = BrowserSession(api_key_id, int(time.time()) + ttl_s, secrets.token_urlsafe(16))
    payload = f"{session.api_key_id}.{session.expires_at}.{session.nonce}"
    return f"{payload}.{_sign(secret, payload)}", session


def read(secret: bytes, cookie: str) -> BrowserSession:
    """The session a cookie holds; ``Unauthorized`` when it is forged, malformed or expired."""
    parts = cookie.split(".")
    if len(parts) != 4:
        raise Unauthorized("the session cookie is malformed: sign in again.")
    key_id, expires, nonce, signature = parts
    if not hmac.compare_digest(_sign(secret, f"{key_id}.{expires}.{nonce}"), signature):
        raise Unauthorized("the session cookie is not valid: sign in again.")
    try:
        session = BrowserSession(uuid.UUID(key_id), int(expires), nonce)
    except ValueError as exc:
        raise Unauthorized("the session cookie is malformed: sign in again.") from exc
    if session.expires_at < time.time():
        raise Unauthorized("the session has expired: sign in again.")
    return session


def check_csrf(secret: bytes, session: BrowserSession, token: str | None) -> None:
    """A state-changing request from a browser session must carry the session's CSRF token."""
    if token is None or not hmac.compare_digest(session.csrf_token(secret), token):
        raise Forbidden(f"a request that changes something needs the page's {CSRF_HEADER} header.")
