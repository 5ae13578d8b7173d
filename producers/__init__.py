"""Producers: the emit SDK (Kafka, HTTP and in-process transports) and key-verifying ASGI/WSGI
middleware. Names are imported lazily, so a service using the HTTP transport never loads
librdkafka.

    from keytrail.producers import KafkaEmitter, KeyTrailMiddleware, LocalKeyVerifier

    emitter = KafkaEmitter("kafka:9092")
    app.add_middleware(KeyTrailMiddleware, verifier=LocalKeyVerifier(store), emitter=emitter, service="orders")
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "UsageEmitter": "keytrail.producers.emitter",
    "EmitterCounters": "keytrail.producers.emitter",
    "UsageEncoder": "keytrail.producers.encoding",
    "DiskSpool": "keytrail.producers.spool",
    "SpoolError": "keytrail.producers.spool",
    "KafkaEmitter": "keytrail.producers.kafka_emitter",
    "HttpEmitter": "keytrail.producers.http_emitter",
    "InProcessEmitter": "keytrail.producers.inprocess_emitter",
    "KeyVerifier": "keytrail.producers.verifiers",
    "LocalKeyVerifier": "keytrail.producers.verifiers",
    "RemoteKeyVerifier": "keytrail.producers.verifiers",
    "VerifierUnavailable": "keytrail.producers.verifiers",
    "KeyGuard": "keytrail.producers.key_guard",
    "KeyIdentity": "keytrail.producers.key_guard",
    "KeyTrailMiddleware": "keytrail.producers.asgi",
    "KeyTrailWSGIMiddleware": "keytrail.producers.wsgi",
    "protect_flask": "keytrail.producers.wsgi",
    "ClientAddressResolver": "keytrail.producers.client_address",
    "emitter_from_settings": "keytrail.producers.factory",
    "emit": "keytrail.producers.default_emitter",
    "configure": "keytrail.producers.default_emitter",
    "verifier_from_settings": "keytrail.producers.factory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keytrail.producers' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
