"""Middleware overhead per request: the same FastAPI and Flask apps with and without KeyTrail.

    .venv/bin/python bench/bench_middleware.py
    .venv/bin/python bench/bench_middleware.py --emitter kafka --bootstrap 127.0.0.1:9092

Requests are made in-process (ASGI: `await app(scope, receive, send)`; WSGI: `app(environ,
start_response)` and the body iterated and closed), so what is measured is the app plus the
middleware, without sockets or HTTP parsing. Each request is timed on its own; the two variants
run in alternating blocks so drift on a shared machine hits both alike.

With KeyTrail the request carries a valid key: verification against a SQLite key store (cache
warm, as in steady state), the route template, client address and the usage event.
`--emitter encode` (default) runs the real encoder and drops the bytes; `--emitter kafka` emits
to a real broker (started here unless `--bootstrap`). A "refused" row measures a request without
a key (401 + event). A "verifier stubbed" row answers every key with a ready verdict, to tell the
key store's share (`KeyStore.verify`, cached) from the middleware's own. "CPU µs/request" is this thread's CPU time per request (thread_time),
which stays meaningful on a machine shared with other work.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastapi import FastAPI  # noqa: E402
from flask import Flask, jsonify  # noqa: E402

from keytrail.keystore.store import KeyStore  # noqa: E402
from keytrail.producers.asgi import KeyTrailMiddleware  # noqa: E402
from keytrail.producers.emitter import EmitterCounters  # noqa: E402
from keytrail.producers.encoding import UsageEncoder  # noqa: E402
from keytrail.producers.verifiers import LocalKeyVerifier  # noqa: E402
from keytrail.producers.wsgi import protect_flask  # noqa: E402

SECRET = b"bench-middleware-secret-0123456789"


class StubVerifier:
    """Says yes to one key without any work: separates the key store's cost from the middleware's."""

    def __init__(self, verdict) -> None:  # type: ignore[no-untyped-def]
        self.verdict = verdict

    def verify(self, presented_key: str, scope=None, client_ip=None):  # type: ignore[no-untyped-def]
        return self.verdict


class EncodingEmitter:
    """Runs the real encoder (what every transport does in emit()) and drops the bytes."""

    def __init__(self) -> None:
        self.encoder = UsageEncoder()
        self.emitted = 0

    def emit(self, event) -> None:  # type: ignore[no-untyped-def]
        self.encoder.encode(event)
        self.emitted += 1

    def flush(self, timeout: float | None = None) -> int:
        return 0

    def close(self, timeout: float | None = None) -> None:
        pass

    @property
    def counters(self) -> EmitterCounters:
        return EmitterCounters(emitted=self.emitted, delivered=self.emitted)


def fastapi_app(keytrail: dict | None) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/orders/{order_id}")
    async def get_order(order_id: str) -> dict:  # async: no thread-pool hop in the measurement
        return {"id": order_id, "total": 19.5}

    if keytrail is not None:
        app.add_middleware(KeyTrailMiddleware, **keytrail)
    return app


def flask_app(keytrail: dict | None) -> Flask:
    app = Flask("bench")

    @app.get("/v1/orders/<order_id>")
    def get_order(order_id: str):  # type: ignore[no-untyped-def]
        return jsonify(id=order_id, total=19.5)

    if keytrail is not None:
        protect_flask(app, **keytrail)
    return app


def asgi_runner(app, headers: list[tuple[bytes, bytes]]):  # type: ignore[no-untyped-def]
    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict) -> None:
        pass

    async def run(count: int) -> list[int]:
        samples: list[int] = []
        clock = time.perf_counter_ns
        for n in range(count):
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": f"/v1/orders/A-{n % 1000}",
                "raw_path": f"/v1/orders/A-{n % 1000}".encode(),
                "query_string": b"",
                "root_path": "",
                "headers": headers,
                "client": ("10.1.2.3", 50000),
                "server": ("127.0.0.1", 8000),
            }
            started = clock()
            await app(scope, receive, send)
            samples.append(clock() - started)
        return samples

    return run


def wsgi_runner(app, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    def start_response(_status: str, _headers: list, _exc_info=None) -> None:  # type: ignore[no-untyped-def]
        return None

    def run(count: int) -> list[int]:
        samples: list[int] = []
        clock = time.perf_counter_ns
        for n in range(count):
            environ = {
                "REQUEST_METHOD": "GET",
                "PATH_INFO": f"/v1/orders/A-{n % 1000}",
                "QUERY_STRING": "",
                "SERVER_NAME": "bench",
                "SERVER_PORT": "80",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "REMOTE_ADDR": "10.1.2.3",
                "wsgi.url_scheme": "http",
                "wsgi.input": None,
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": False,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
                "wsgi.version": (1, 0),
                **headers,
            }
            started = clock()
            body = app(environ, start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
            samples.append(clock() - started)
        return samples

    return run


def quantiles(samples: list[int]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=100)
    return q[49] / 1000, q[98] / 1000


def alternate(
    runs: dict[str, object], total: int, blocks: int, is_async: bool
) -> dict[str, tuple[list[int], float]]:
    """Per variant: every request's wall time (ns) and this thread's CPU µs per request."""
    results: dict[str, list[int]] = {name: [] for name in runs}
    cpu: dict[str, int] = dict.fromkeys(runs, 0)
    loop = asyncio.new_event_loop() if is_async else None
    for run in runs.values():  # warm-up
        loop.run_until_complete(run(500)) if loop else run(500)  # type: ignore[operator]
    for _ in range(blocks):
        for name, run in runs.items():
            count = total // blocks
            started = time.thread_time_ns()
            samples = loop.run_until_complete(run(count)) if loop else run(count)  # type: ignore[operator]
            cpu[name] += time.thread_time_ns() - started
            results[name].extend(samples)
    if loop:
        loop.close()
    return {name: (samples, cpu[name] / len(samples) / 1000) for name, samples in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="timed requests per variant")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--emitter", choices=["encode", "kafka"], default="encode")
    parser.add_argument("--bootstrap")
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="keytrail-bench-mw-"))
    store = KeyStore.open(f"sqlite:///{workdir / 'keys.db'}", SECRET, cache_ttl_seconds=3600)
    record, secret = store.create_key("bench", "proj_bench", scopes=["*"])
    broker = None
    if options.emitter == "kafka":
        from keytrail.producers.kafka_emitter import KafkaEmitter

        bootstrap = options.bootstrap
        if bootstrap is None:
            from tests.infra.kafka import KafkaBroker

            broker = KafkaBroker()
            broker.__enter__()
            bootstrap = broker.bootstrap
        emitter = KafkaEmitter(
            bootstrap, topic=f"keytrail.usage.v1.bench-mw-{os.getpid()}", spool_dir=workdir / "spool"
        )
    else:
        emitter = EncodingEmitter()
    keytrail = {"verifier": LocalKeyVerifier(store), "emitter": emitter, "service": "orders-api"}
    stubbed = {**keytrail, "verifier": StubVerifier(store.verify(secret))}
    lines = []
    gc.collect()
    gc.freeze()
    try:
        asgi = alternate(
            {
                "FastAPI alone": asgi_runner(fastapi_app(None), []),
                "FastAPI + KeyTrail": asgi_runner(
                    fastapi_app(keytrail), [(b"authorization", f"Bearer {secret}".encode())]
                ),
                "FastAPI + KeyTrail, verifier stubbed": asgi_runner(
                    fastapi_app(stubbed), [(b"authorization", f"Bearer {secret}".encode())]
                ),
                "FastAPI + KeyTrail, refused (no key)": asgi_runner(fastapi_app(keytrail), []),
            },
            options.requests,
            options.blocks,
            is_async=True,
        )
        wsgi = alternate(
            {
                "Flask alone": wsgi_runner(flask_app(None).wsgi_app, {}),
                "Flask + KeyTrail": wsgi_runner(
                    flask_app(keytrail).wsgi_app, {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
                ),
                "Flask + KeyTrail, verifier stubbed": wsgi_runner(
                    flask_app(stubbed).wsgi_app, {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
                ),
                "Flask + KeyTrail, refused (no key)": wsgi_runner(flask_app(keytrail).wsgi_app, {}),
            },
            options.requests,
            options.blocks,
            is_async=False,
        )
        for results, base in ((asgi, "FastAPI alone"), (wsgi, "Flask alone")):
            base50, base99 = quantiles(results[base][0])
            base_cpu = results[base][1]
            for name, (samples, cpu) in results.items():
                p50, p99 = quantiles(samples)
                if name == base:
                    overhead = "– | – | –"
                else:
                    overhead = f"{p50 - base50:+.1f} | {p99 - base99:+.1f} | {cpu - base_cpu:+.1f}"
                lines.append(
                    f"| {name} | {len(samples):,} | {p50:.1f} | {p99:.1f} | {cpu:.1f} | {overhead} |"
                )
        emitter.flush(60)
        counters = emitter.counters
    finally:
        gc.unfreeze()
        emitter.close()
        store.close()
        if broker is not None:
            broker.close()
    print(
        f"\nMiddleware overhead, in-process calls, {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, emitter: {options.emitter}; events emitted {counters.emitted:,}, "
        f"delivered {counters.delivered:,}\n"
    )
    print(
        "| app | requests | p50 µs | p99 µs | CPU µs/request | overhead p50 µs | overhead p99 µs | overhead CPU µs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(lines))
    del record


if __name__ == "__main__":
    main()
