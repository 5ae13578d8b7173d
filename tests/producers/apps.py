"""Small real FastAPI and Flask services protected by KeyTrail, and a key store with keys in every
state, for the middleware tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from flask import Flask, jsonify, request

from keytrail.keystore.key_format import generate_key
from keytrail.keystore.store import KeyStore
from keytrail.producers.asgi import KeyTrailMiddleware
from keytrail.producers.wsgi import protect_flask
from keytrail.schemas.timestamps import to_utc_millis

SECRET = b"producers-test-hashing-secret-0123456789"
PROJECT = "proj_orders"
SERVICE = "orders-api"


class MovableClock:
    def __init__(self) -> None:
        self.now = to_utc_millis(datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Keyring:
    """A key store with one key in each state; `secrets[name]` and `ids[name]`."""

    store: KeyStore
    secrets: dict[str, str]
    ids: dict[str, str]


def make_keyring(url: str) -> Keyring:
    clock = MovableClock()
    store = KeyStore.open(url, SECRET, clock=clock, cache_ttl_seconds=0, negative_cache_ttl_seconds=0)
    secrets, ids = {}, {}
    for name in ("valid", "revoked", "expired", "disabled", "readonly"):
        scopes = ["orders:read"] if name == "readonly" else ["*"]
        record, secret = store.create_key(
            f"test {name}", PROJECT, scopes=scopes, expires_in="1h" if name == "expired" else "never"
        )
        secrets[name], ids[name] = secret, record.id
    store.revoke(ids["revoked"])
    store.disable(ids["disabled"])
    clock.now = clock.now + timedelta(hours=2)  # the "expired" key's hour is over
    secrets["unknown"] = generate_key("live")  # well-formed, never stored
    return Keyring(store, secrets, ids)


def fastapi_app(**keytrail_options):  # type: ignore[no-untyped-def]
    app = FastAPI()

    @app.get("/v1/orders/{order_id}")
    def get_order(order_id: str, call: Request) -> dict:
        return {"order": order_id, "caller": call.state.keytrail.key_id}

    @app.post("/v1/orders")
    async def create_order(call: Request) -> dict:
        return {"received": len(await call.body())}

    @app.get("/v1/limited")
    def limited() -> JSONResponse:
        return JSONResponse({"error": "slow down"}, status_code=429)

    @app.get("/v1/boom")
    def boom() -> dict:
        raise RuntimeError("the handler failed")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    app.add_middleware(KeyTrailMiddleware, **keytrail_options)
    return app


def flask_app(**keytrail_options):  # type: ignore[no-untyped-def]
    app = Flask("orders")

    @app.get("/v1/orders/<order_id>")
    def get_order(order_id: str):  # type: ignore[no-untyped-def]
        return jsonify(order=order_id, caller=request.environ["keytrail"].key_id)

    @app.post("/v1/orders")
    def create_order():  # type: ignore[no-untyped-def]
        return jsonify(received=len(request.get_data()))

    @app.get("/v1/limited")
    def limited():  # type: ignore[no-untyped-def]
        return jsonify(error="slow down"), 429

    @app.get("/v1/boom")
    def boom():  # type: ignore[no-untyped-def]
        raise RuntimeError("the handler failed")

    @app.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        return jsonify(ok=True)

    protect_flask(app, **keytrail_options)
    return app
