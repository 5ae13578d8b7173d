"""A msgspec mirror of KeyUsageEvent v1 for the stream's hot path.

The pydantic model in `keytrail.schemas.usage` stays the only definition of the contract: this mirror
exists because validating with pydantic costs tens of microseconds per event, which caps a
worker far below its target. `tests/core/test_fast_decode.py` checks the mirror field by field
against the model and by differential fuzzing: whatever the fast path accepts, pydantic accepts
with equal values. The fast path may refuse more than pydantic (lax inputs such as numeric
strings); `decode_fast` callers then ask pydantic, which accepts or gives the reason.

Instances duck-type KeyUsageEvent for everything the core, detectors and sinks read.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from keytrail.schemas.secrets import identifier_holds_secret
from keytrail.schemas.usage import _MAX_FUTURE_SKEW_S, KeyUsageEvent, Outcome, normalise_ip

# Patterns end in \Z, not $: Python's $ also matches before a trailing newline, pydantic's does not.
_IDENTIFIER = msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*\Z")
_METHOD = msgspec.Meta(min_length=1, max_length=16, pattern=r"^[A-Z]+\Z")


class FastUsageEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Field for field the KeyUsageEvent v1 contract (names, types, bounds, defaults)."""

    event_id: UUID
    schema_version: Literal[1] = 1
    occurred_at: datetime
    key_id: Annotated[str, _IDENTIFIER]
    project_id: Annotated[str, _IDENTIFIER]
    service: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    method: Annotated[str, _METHOD]
    route: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    status: Annotated[int, msgspec.Meta(ge=0, le=999)]
    outcome: Outcome
    latency_ms: Annotated[float, msgspec.Meta(ge=0, le=86_400_000)] = 0.0
    request_bytes: Annotated[int, msgspec.Meta(ge=0, le=2**53)] = 0
    response_bytes: Annotated[int, msgspec.Meta(ge=0, le=2**53)] = 0
    client_ip: Annotated[str, msgspec.Meta(min_length=2, max_length=45)]
    user_agent: Annotated[str, msgspec.Meta(max_length=512)] = ""
    request_id: Annotated[str, msgspec.Meta(max_length=128)] = ""

    def to_model(self) -> KeyUsageEvent:
        """The same event as the pydantic contract model (not re-validated: the fast path vouched for it)."""
        return KeyUsageEvent.model_construct(**{name: getattr(self, name) for name in self.__struct_fields__})

    def model_dump_json(self) -> str:
        """The contract's JSON, exactly what KeyUsageEvent.model_dump_json() gives for the same event."""
        return self.to_model().model_dump_json()


_DECODER = msgspec.json.Decoder(FastUsageEvent)
_replace = msgspec.structs.replace


def decode_fast(payload: bytes) -> FastUsageEvent | None:
    """The event if the fast path can vouch for it, else None (then ask pydantic for the verdict).

    Applies the model's own checks after parsing: timezone required, converted to UTC and cut to
    milliseconds, not too far in the future, client IP canonical, key and project ids holding no secret
    (in any position: the one scanner of `keytrail.schemas.secrets`).
    """
    try:
        event = _DECODER.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    occurred_at = event.occurred_at
    offset = occurred_at.utcoffset()
    if offset is None:
        return None
    if offset:
        occurred_at = occurred_at.astimezone(UTC)
    elif occurred_at.tzinfo is not UTC:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    micro = occurred_at.microsecond
    if micro % 1000:
        occurred_at = occurred_at.replace(microsecond=micro - micro % 1000)
    if occurred_at.timestamp() - time.time() > _MAX_FUTURE_SKEW_S:
        return None
    if identifier_holds_secret(event.key_id) or identifier_holds_secret(event.project_id):
        return None
    client_ip = normalise_ip(event.client_ip)
    if client_ip is None:
        return None
    if occurred_at is not event.occurred_at or client_ip != event.client_ip:
        event = _replace(event, occurred_at=occurred_at, client_ip=client_ip)
    return event

