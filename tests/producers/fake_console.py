"""A stand-in for the console's ingest and verify endpoints, speaking the HTTP contract, for the
HttpEmitter and RemoteKeyVerifier tests (the console's own tests cover the real server)."""

from __future__ import annotations

import httpx
import orjson
from flask import Flask, Response, request

from keytrail.schemas.codec import InvalidEvent, decode_usage_event


class FakeConsole:
    """`POST /v1/events` and `POST /v1/verify`; `down=True` makes every call a connection error."""

    def __init__(self, keystore=None, max_events: int = 5000, ingest_key: str | None = None) -> None:  # type: ignore[no-untyped-def]
        self.keystore = keystore
        self.max_events = max_events
        self.ingest_key = ingest_key
        self.down = False
        self.fail_with: int | None = None
        self.events: list = []
        self.seen: set = set()
        self.requests: list[dict] = []
        self.app = Flask("fake-console")
        self.app.post("/v1/events")(self._ingest)
        self.app.post("/v1/verify")(self._verify)

    def _ingest(self) -> Response:
        self.requests.append(
            {"authorization": request.headers.get("Authorization"), "size": len(request.data)}
        )
        if self.fail_with:
            return Response(b'{"error":{"code":"broken","message":"try later"}}', self.fail_with)
        if self.ingest_key and request.headers.get("Authorization") != f"Bearer {self.ingest_key}":
            return Response(b'{"error":{"code":"unauthorized","message":"an ingest key is required"}}', 401)
        events = orjson.loads(request.data)["events"]
        if len(events) > self.max_events:
            return Response(b'{"error":{"code":"too_large","message":"too many events"}}', 413)
        accepted, duplicates, rejected = 0, 0, []
        for index, raw in enumerate(events):
            try:
                event = decode_usage_event(orjson.dumps(raw))
            except InvalidEvent as error:
                rejected.append({"index": index, "code": error.code, "reason": error.reason})
                continue
            if event.event_id in self.seen:
                duplicates += 1
            else:
                self.seen.add(event.event_id)
                self.events.append(event)
                accepted += 1
        return Response(
            orjson.dumps({"accepted": accepted, "duplicates": duplicates, "rejected": rejected}),
            200,
            content_type="application/json",
        )

    def _verify(self) -> Response:
        body = orjson.loads(request.data)
        self.requests.append({"verify": sorted(body)})
        verdict = self.keystore.verify(body["key"], scope=body.get("scope"), client_ip=body.get("client_ip"))
        return Response(
            orjson.dumps(
                {
                    "outcome": verdict.outcome.value,
                    "key_id": verdict.key_id,
                    "project_id": verdict.project_id,
                    "reason": verdict.reason,
                }
            ),
            200,
            content_type="application/json",
        )

    def transport(self) -> httpx.BaseTransport:
        console = self
        inner = httpx.WSGITransport(self.app)

        class Switchable(httpx.BaseTransport):
            def handle_request(self, req: httpx.Request) -> httpx.Response:
                if console.down:
                    raise httpx.ConnectError("connection refused", request=req)
                return inner.handle_request(req)

        return Switchable()

    def async_transport(self) -> httpx.AsyncBaseTransport:
        console = self
        inner = httpx.WSGITransport(self.app)

        class Switchable(httpx.AsyncBaseTransport):
            async def handle_async_request(self, req: httpx.Request) -> httpx.Response:
                if console.down:
                    raise httpx.ConnectError("connection refused", request=req)
                await req.aread()
                response = inner.handle_request(req)
                return httpx.Response(response.status_code, headers=response.headers, content=response.read())

        return Switchable()
