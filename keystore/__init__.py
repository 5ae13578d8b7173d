"""The system of record for API keys: format, hashing, lifecycle, verification.

Typical use::

    store = KeyStore.open("sqlite:///keys.db", secret, env="live")
    record, secret = store.create_key("billing worker", "payments", expires_in="90d")
    verdict = store.verify(secret, scope="orders:read", client_ip="203.0.113.7")
"""

from keytrail.keystore.caller import Caller
from keytrail.keystore.errors import (
    InvalidKeyRequest,
    KeyAlreadyRotated,
    KeyNotFound,
    KeyStateConflict,
    KeyStoreError,
    PermissionDenied,
    UnsupportedStoreUrl,
)
from keytrail.keystore.lifecycle_sinks import InMemoryLifecycleSink, KafkaLifecycleSink, LifecycleSink
from keytrail.keystore.listing import KeyFilter, KeySort
from keytrail.keystore.store import UNCHANGED, KeyStore, Rotation, SweepReport
from keytrail.keystore.sweeper import ExpirySweeper, sweep_forever
from keytrail.schemas.verification import Verification

__all__ = [
    "UNCHANGED",
    "Caller",
    "ExpirySweeper",
    "InMemoryLifecycleSink",
    "InvalidKeyRequest",
    "KafkaLifecycleSink",
    "KeyAlreadyRotated",
    "KeyFilter",
    "KeyNotFound",
    "KeySort",
    "KeyStateConflict",
    "KeyStore",
    "KeyStoreError",
    "LifecycleSink",
    "PermissionDenied",
    "Rotation",
    "SweepReport",
    "UnsupportedStoreUrl",
    "Verification",
    "sweep_forever",
]
