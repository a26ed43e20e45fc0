"""Request bodies: a size limit before anything parses them, and JSON that cannot blow the stack.

JSON (and other small) bodies are read whole up to ``json_limit`` and handed on;
uploads (``multipart/form-data``, ``application/octet-stream``) stream through, counted
against ``upload_limit``. Past a limit the client gets ``413 request_too_large`` and the
application never sees the rest of the body.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.errors import error_body
from conveyor.limits import MAX_DEPTH, json_too_deep

UPLOAD_TYPES = ("multipart/form-data", "application/octet-stream")


async def _send_error(send: Send, status: int, code: str, message: str, detail: Any = None) -> None:
    body = json.dumps(error_body(code, message, detail)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers") or ():
        if k.lower() == name:
            return bytes(v).decode("latin-1")
    return None


class BodyLimitMiddleware:
    """Refuse bodies past their limit with 413, and JSON nested past ``MAX_DEPTH + 1`` with 422."""

    def __init__(self, app: ASGIApp, *, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        upload = ctype in UPLOAD_TYPES
        limit = self.upload_limit if upload else self.json_limit
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_error(send, 422, "invalid_request", "Content-Length is not a number")
                return
            if declared > limit:
                await self._too_large(send, limit, upload)
                return
        if upload:
            await self._stream(scope, receive, send, limit)
        else:
            await self._buffered(scope, receive, send, limit, ctype)

    async def _too_large(self, send: Send, limit: int, upload: bool) -> None:
        what = "CONVEYOR_MAX_UPLOAD_BYTES" if upload else "twice CONVEYOR_MAX_PAYLOAD_BYTES"
        await _send_error(send, 413, "request_too_large",
                          f"the request body is larger than {limit} bytes ({what}); send a smaller one",
                          {"limit": limit})

    async def _buffered(self, scope: Scope, receive: Receive, send: Send, limit: int, ctype: str) -> None:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(send, limit, False)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and (ctype == "application/json" or ctype.endswith("+json")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                await _send_error(send, 422, "invalid_request", f"the JSON body is not UTF-8 ({exc.reason} at "
                                                                f"byte {exc.start})")
                return
            if json_too_deep(text, MAX_DEPTH + 1):
                await _send_error(send, 422, "invalid_request",
                                  f"the JSON body nests arrays and objects more than {MAX_DEPTH + 1} levels deep; "
                                  "flatten it")
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _stream(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        size = 0
        refused = False
        started = False

        async def counted() -> Message:
            nonlocal size, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    refused = True
                    if not started:
                        await self._too_large(send, limit, True)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused:
                return  # our 413 went out; what the application says after it is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not refused:
                raise
