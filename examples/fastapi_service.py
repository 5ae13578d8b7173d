"""A small FastAPI "orders" service protected by KeyTrail.

    python examples/fastapi_service.py                  # http://127.0.0.1:8001
    curl -H "Authorization: Bearer kt_live_…" http://127.0.0.1:8001/v1/orders/A-1001

Every request needs a KeyTrail key (`Authorization: Bearer …` or `X-API-Key: …`), except
`/healthz`. Keys are checked against the key store in `KEYTRAIL_KEYSTORE_URL` (`--verify local`,
the default) or by the console (`--verify remote`, authenticated with `KEYTRAIL_INGEST_KEY`). Usage
events go to Kafka in production mode and to the console's ingest endpoint in the embedded mode
(`--transport` to choose). `--create-key` prints a fresh key for the demo.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request

from keytrail.producers import KeyTrailMiddleware, emitter_from_settings, verifier_from_settings
from keytrail.producers.emitter import UsageEmitter
from keytrail.producers.verifiers import KeyVerifier

ORDERS = {f"A-{1000 + n}": {"id": f"A-{1000 + n}", "total": 10 * n + 9.5} for n in range(1, 6)}


def create_app(verifier: KeyVerifier, emitter: UsageEmitter, *, service: str = "orders-fastapi") -> FastAPI:
    """The service, with KeyTrail in front of every route but /healthz."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        emitter.close()

    app = FastAPI(title="orders (KeyTrail example)", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/orders")
    def list_orders(call: Request) -> dict:
        return {"orders": list(ORDERS.values()), "caller": call.state.keytrail.key_id}

    @app.get("/v1/orders/{order_id}")
    def get_order(order_id: str) -> dict:
        if order_id not in ORDERS:
            raise HTTPException(404, f"no order {order_id}")
        return ORDERS[order_id]

    @app.post("/v1/orders", status_code=201)
    async def create_order(call: Request) -> dict:
        order_id = f"A-{1000 + len(ORDERS) + 1}"
        ORDERS[order_id] = {"id": order_id, "total": float(len(await call.body()))}
        return ORDERS[order_id]

    app.add_middleware(
        KeyTrailMiddleware, verifier=verifier, emitter=emitter, service=service, public_paths=["/healthz"]
    )
    return app


def main() -> None:
    import uvicorn

    from keytrail.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--verify", choices=["local", "remote"], default="local")
    parser.add_argument(
        "--transport", choices=["kafka", "http"], default=None, help="[default: by KEYTRAIL_MODE]"
    )
    parser.add_argument("--create-key", metavar="PROJECT", help="create a key in PROJECT, print it, and exit")
    options = parser.parse_args()
    settings = get_settings()
    if options.create_key:
        from keytrail.keystore.store import KeyStore

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with KeyStore.open(settings.keystore_url, settings.hashing_secret(), env=settings.key_env) as store:
            record, secret = store.create_key("fastapi example", options.create_key, scopes=["*"])
        print(f"{record.id}\n{secret}")
        return
    app = create_app(
        verifier_from_settings(settings, mode=options.verify),
        emitter_from_settings(settings, transport=options.transport),
    )
    uvicorn.run(app, host=options.host, port=options.port)


if __name__ == "__main__":
    main()
