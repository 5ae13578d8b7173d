"""The request body limit, enforced before the body is read: a declared Content-Length over the
limit is answered 413 at once; a body sent without one (chunked) is cut off as soon as it passes it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyLimit:
    """Pure ASGI middleware: 413 `payload_too_large` naming the limit, never more than
    `max_bytes` (+ one chunk) read from the client."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self, size: str) -> str:
        return (
            f"the request body {size} exceeds the limit of {self.max_bytes} bytes "
            "(KEYTRAIL_MAX_REQUEST_BODY_BYTES); send the events in smaller batches"
        )

    async def _answer(self, send: Send, status: int, code: str, message: str) -> None:
        body = orjson.dumps({"error": {"code": code, "message": message}})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit():
                    await self._answer(send, 400, "bad_request", "Content-Length is not a number")
                    return
                if int(value) > self.max_bytes:
                    await self._answer(send, 413, "payload_too_large", self._message(f"of {int(value)} bytes"))
                    return
        received = 0
        started = answered = False

        async def limited_receive() -> Message:
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # answer now and tell the app the client is gone: it stops reading, whatever it
                    # does with the error (FastAPI turns exceptions while parsing into a 400)
                    if not started:
                        answered = True
                        await self._answer(
                            send, 413, "payload_too_large", self._message(f"of more than {self.max_bytes} bytes")
                        )
                    return {"type": "http.disconnect"}
            return message

        async def observed_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the 413 went out already
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, observed_send)
