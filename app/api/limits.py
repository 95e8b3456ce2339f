"""Refuse request bodies above their limit with a 413 problem, before they fill memory or disk: uploads
(multipart) ``max_upload_bytes``, any other body ``max_json_bytes``.

A pure ASGI middleware: a declared ``Content-Length`` above the limit is refused without reading the
body; a streamed (chunked) body is counted as it arrives and cut off once it passes the limit.
Starlette's own limiter answers in plain text, so it is not used.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge


async def _send_413(send: Send, limit: int, path: str) -> None:
    problem = PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes.", limit=limit)
    body = json.dumps(problem.to_problem(instance=path)).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """``max_bytes`` for uploads (multipart bodies), ``max_json_bytes`` for every other body (JSON,
    forms): a client cannot make the API parse a 500 MB JSON document."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_json_bytes: int | None = None) -> None:
        self.app = app
        self.upload_bytes = max_bytes
        self.json_bytes = max_bytes if max_json_bytes is None else max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        upload = headers.get("content-type", "").lower().startswith("multipart/")
        limit = self.upload_bytes if upload else self.json_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_413(send, limit, scope.get("path", ""))
            return
        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # To the app the client went away; the client gets our 413 below.
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await _send_413(send, limit, scope.get("path", ""))
