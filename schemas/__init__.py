"""KeyTrail's contracts: the wire events, signals and key records.

These pydantic models are the only place a field is defined; JSON Schema, ClickHouse
columns and API responses are derived from or checked against them.
"""

from keytrail.schemas.keys import KeyRecord, KeyStatus
from keytrail.schemas.last_used import LastUsed
from keytrail.schemas.lifecycle import KeyLifecycleEvent, LifecycleAction
from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.schemas.topics import Topics
from keytrail.schemas.usage import KeyUsageEvent, Outcome

__all__ = [
    "KeyLifecycleEvent",
    "KeyRecord",
    "KeyStatus",
    "KeyUsageEvent",
    "LastUsed",
    "LifecycleAction",
    "Outcome",
    "Severity",
    "Signal",
    "SignalKind",
    "Topics",
]
