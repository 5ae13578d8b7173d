"""Producers: the emit SDK (Kafka, HTTP and in-process transports) and key-verifying ASGI/WSGI
middleware. Names are imported lazily, so a service using the HTTP transport never loads
librdkafka.

    from producers import KafkaEmitter, KeyTrailMiddleware, LocalKeyVerifier

    emitter = KafkaEmitter("kafka:9092")
    app.add_middleware(KeyTrailMiddleware, verifier=LocalKeyVerifier(store), emitter=emitter, service="orders")
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "UsageEmitter": "producers.emitter",
    "EmitterCounters": "producers.emitter",
    "UsageEncoder": "producers.encoding",
    "DiskSpool": "producers.spool",
    "SpoolError": "producers.spool",
    "KafkaEmitter": "producers.kafka_emitter",
    "HttpEmitter": "producers.http_emitter",
    "InProcessEmitter": "producers.inprocess_emitter",
    "KeyVerifier": "producers.verifiers",
    "LocalKeyVerifier": "producers.verifiers",
    "RemoteKeyVerifier": "producers.verifiers",
    "VerifierUnavailable": "producers.verifiers",
    "KeyGuard": "producers.key_guard",
    "KeyIdentity": "producers.key_guard",
    "KeyTrailMiddleware": "producers.asgi",
    "KeyTrailWSGIMiddleware": "producers.wsgi",
    "protect_flask": "producers.wsgi",
    "ClientAddressResolver": "producers.client_address",
    "emitter_from_settings": "producers.factory",
    "verifier_from_settings": "producers.factory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'producers' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
