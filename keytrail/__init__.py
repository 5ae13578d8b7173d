"""KeyTrail: the usage and audit trail for API keys.

`import keytrail` is the small front door a service needs to record key usage and protect its
API; everything else lives in the sub-packages (`keytrail.schemas`, `keytrail.producers`,
`keytrail.stream_processors`, `keytrail.keystore`, `keytrail.console`, `keytrail.sql`).

    import keytrail

    keytrail.emit({...})                      # one KeyUsageEvent v1, never blocks the request
    app.add_middleware(keytrail.KeyTrailMiddleware, verifier=..., emitter=..., service="orders")

Names are imported on first use, so `import keytrail` loads no transport, and the HTTP emitter
never loads librdkafka.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "emit": "keytrail.producers.default_emitter",
    "configure": "keytrail.producers.default_emitter",
    "KeyUsageEvent": "keytrail.schemas.usage",
    "Outcome": "keytrail.schemas.usage",
    "InvalidEvent": "keytrail.schemas.codec",
    "UsageEmitter": "keytrail.producers.emitter",
    "KafkaEmitter": "keytrail.producers.kafka_emitter",
    "HttpEmitter": "keytrail.producers.http_emitter",
    "InProcessEmitter": "keytrail.producers.inprocess_emitter",
    "KeyTrailMiddleware": "keytrail.producers.asgi",
    "KeyTrailWSGIMiddleware": "keytrail.producers.wsgi",
    "protect_flask": "keytrail.producers.wsgi",
    "RemoteKeyVerifier": "keytrail.producers.verifiers",
    "LocalKeyVerifier": "keytrail.producers.verifiers",
}

__all__ = [
    "HttpEmitter",
    "InProcessEmitter",
    "InvalidEvent",
    "KafkaEmitter",
    "KeyTrailMiddleware",
    "KeyTrailWSGIMiddleware",
    "KeyUsageEvent",
    "LocalKeyVerifier",
    "Outcome",
    "RemoteKeyVerifier",
    "UsageEmitter",
    "configure",
    "emit",
    "protect_flask",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from keytrail.producers.asgi import KeyTrailMiddleware
    from keytrail.producers.default_emitter import configure, emit
    from keytrail.producers.emitter import UsageEmitter
    from keytrail.producers.http_emitter import HttpEmitter
    from keytrail.producers.inprocess_emitter import InProcessEmitter
    from keytrail.producers.kafka_emitter import KafkaEmitter
    from keytrail.producers.verifiers import LocalKeyVerifier, RemoteKeyVerifier
    from keytrail.producers.wsgi import KeyTrailWSGIMiddleware, protect_flask
    from keytrail.schemas.codec import InvalidEvent
    from keytrail.schemas.usage import KeyUsageEvent, Outcome


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keytrail' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
