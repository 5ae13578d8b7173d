"""The ASGI middleware builds usage events from request headers: a secret a client puts there
(user agent, request id) is redacted before the event is emitted, for accepted and refused requests."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from keytrail.producers.asgi import KeyTrailMiddleware
from keytrail.producers.inprocess_emitter import InProcessEmitter
from keytrail.producers.verifiers import LocalKeyVerifier
from tests.security.test_secret_scanner import planted_secrets


def test_the_middleware_redacts_secrets_a_client_puts_in_its_headers(store):
    received: list = []
    emitter = InProcessEmitter(received.extend, background=False)
    _, secret = store.create_key("svc", "proj", scopes=["*"])
    app = FastAPI()
    app.get("/orders")(lambda: {"ok": True})
    app.add_middleware(KeyTrailMiddleware, verifier=LocalKeyVerifier(store), emitter=emitter, service="orders")
    leaked = planted_secrets()

    async def call(headers):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            return (await client.get("/orders", headers=headers)).status_code

    assert asyncio.run(call({"Authorization": f"Bearer {secret}", "User-Agent": f"bot {leaked['slack_token']}",
                             "X-Request-Id": leaked["jwt"]})) == 200
    assert asyncio.run(call({"User-Agent": f"x{leaked['stripe_key']}"})) == 401  # refused requests too
    emitter.flush()
    assert len(received) == 2
    dumped = "".join(event.model_dump_json() for event in received)
    assert all(value not in dumped for value in leaked.values())
    assert received[0].user_agent == "bot [REDACTED:slack_token]"
    assert received[0].request_id == "[REDACTED:jwt]"
