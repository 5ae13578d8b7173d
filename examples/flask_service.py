"""A small Flask "orders" service protected by KeyTrail.

    python examples/flask_service.py                    # http://127.0.0.1:8002
    curl -H "X-API-Key: kt_live_…" http://127.0.0.1:8002/v1/orders/A-1001

Same options as `examples/fastapi_service.py`: `--verify local|remote`, `--transport kafka|http`,
`--create-key PROJECT`.
"""

from __future__ import annotations

import argparse
import atexit

from flask import Flask, abort, jsonify, request

from keytrail.producers import emitter_from_settings, protect_flask, verifier_from_settings
from keytrail.producers.emitter import UsageEmitter
from keytrail.producers.verifiers import KeyVerifier

ORDERS = {f"A-{1000 + n}": {"id": f"A-{1000 + n}", "total": 10 * n + 9.5} for n in range(1, 6)}


def create_app(verifier: KeyVerifier, emitter: UsageEmitter, *, service: str = "orders-flask") -> Flask:
    """The service, with KeyTrail in front of every route but /healthz."""
    app = Flask("orders")

    @app.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        return jsonify(status="ok")

    @app.get("/v1/orders")
    def list_orders():  # type: ignore[no-untyped-def]
        return jsonify(orders=list(ORDERS.values()), caller=request.environ["keytrail"].key_id)

    @app.get("/v1/orders/<order_id>")
    def get_order(order_id: str):  # type: ignore[no-untyped-def]
        if order_id not in ORDERS:
            abort(404)
        return jsonify(ORDERS[order_id])

    @app.post("/v1/orders")
    def create_order():  # type: ignore[no-untyped-def]
        order_id = f"A-{1000 + len(ORDERS) + 1}"
        ORDERS[order_id] = {"id": order_id, "total": float(len(request.get_data()))}
        return jsonify(ORDERS[order_id]), 201

    protect_flask(app, verifier=verifier, emitter=emitter, service=service, public_paths=["/healthz"])
    return app


def main() -> None:
    from keytrail.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
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
            record, secret = store.create_key("flask example", options.create_key, scopes=["*"])
        print(f"{record.id}\n{secret}")
        return
    emitter = emitter_from_settings(settings, transport=options.transport)
    atexit.register(emitter.close)
    app = create_app(verifier_from_settings(settings, mode=options.verify), emitter)
    app.run(host=options.host, port=options.port, threaded=True)


if __name__ == "__main__":
    main()
