"""Strangers are turned away before their body is read.

FastAPI reads and parses a request's body before any dependency checks its key, so a client with no key
could make the API take in (and parse on the event loop) a body as large as the upload limit. This pure
ASGI middleware checks the credentials of every ``/v1`` request that carries a body first: no bearer key
and no review session is a 401 at once; a bearer key is looked up (in a worker thread, and remembered
for the route, ``app.services.recent``) and refused with 401 before a byte of the body is read.
"""

from __future__ import annotations

import json

from anyio import to_thread
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.problems import DEPENDENCY_ERRORS, dependency_error
from app.errors import AppError, Unauthorized
from app.services import projects, sessions

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _refuse(send: Send, error: AppError, path: str) -> None:
    body = json.dumps(error.to_problem(instance=path)).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    if isinstance(error, Unauthorized):
        headers.append((b"www-authenticate", b"Bearer"))
    if "retry_after" in error.extra:
        headers.append((b"retry-after", str(int(error.extra["retry_after"])).encode()))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class CredentialsFirst:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _BODY_METHODS
            or not scope["path"].startswith("/v1/")
        ):
            await self.app(scope, receive, send)
            return
        try:
            await self._check(scope)
        except Unauthorized as error:
            await _refuse(send, error, scope["path"])
            return
        except DEPENDENCY_ERRORS as exc:  # the key cannot be looked up: 503, as inside the app
            await _refuse(send, dependency_error(exc, f"{scope['method']} {scope['path']}"), scope["path"])
            return
        await self.app(scope, receive, send)

    async def _check(self, scope: Scope) -> None:
        headers = Headers(scope=scope)
        state = scope["app"].state
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            key = token.strip()
            recent = state.recent_keys
            digest = projects.key_digest(key)

            def look_up() -> None:
                with state.session_factory() as session:
                    if recent.get(session, digest) is None:
                        row = projects.authenticate_key(session, key)
                        recent.remember(session, digest, row, row.project)

            await to_thread.run_sync(look_up)
            return
        cookie = cookie_parser(headers.get("cookie", "")).get(sessions.COOKIE)
        if cookie is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'.")
        sessions.read(state.session_secret, cookie)  # a forged or expired session: 401 here
