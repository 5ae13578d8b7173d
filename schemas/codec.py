"""Decoding of wire bytes into contract events, with a reason for everything refused."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import ValidationError

from keytrail.schemas.usage import KeyUsageEvent
from keytrail.schemas.usage_fast import FastUsageEvent, decode_fast

UsageEvent = KeyUsageEvent | FastUsageEvent
"""What decoding yields: the msgspec mirror on the fast path, the pydantic model otherwise; same attributes."""

_SECRET_ANYWHERE = re.compile(rb"kt_([a-z0-9]+)_[A-Za-z0-9]{20,}_[A-Za-z0-9]{4,}")

MAX_EVENT_BYTES = 16_384
"""No valid event comes near this; anything larger is refused before parsing."""


@dataclass(frozen=True, slots=True)
class InvalidEvent(Exception):
    """A payload that is not a valid KeyUsageEvent v1; `reason` says what to fix."""

    reason: str
    code: str = "invalid_event"

    def __str__(self) -> str:
        return self.reason


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad field and why, without echoing the input values."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        location = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def decode_usage_event(payload: bytes | str) -> UsageEvent:
    """Parse and validate one JSON event; raises InvalidEvent with a clear reason.

    Valid events take the msgspec fast path; anything it cannot vouch for is judged by the
    pydantic model, which either accepts it (lax but valid input) or says what is wrong.
    """
    if payload is None or len(payload) == 0:
        raise InvalidEvent("empty payload", "empty_payload")
    if len(payload) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"payload of {len(payload)} bytes exceeds {MAX_EVENT_BYTES}", "oversize_payload")
    fast = decode_fast(payload)
    if fast is not None:
        return fast
    return decode_usage_event_strictly(payload)


def decode_usage_event_strictly(payload: bytes | str) -> KeyUsageEvent:
    """Decode with the pydantic model only (the contract's reference behaviour)."""
    try:
        return KeyUsageEvent.model_validate_json(payload)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise InvalidEvent("not valid JSON: " + describe_validation_error(exc), "bad_json") from None
        raise InvalidEvent(describe_validation_error(exc), "schema_violation") from None


def encode_usage_event(event: KeyUsageEvent) -> bytes:
    """The contract's JSON bytes for an event."""
    return event.model_dump_json().encode()


def redact_secrets(payload: bytes) -> bytes:
    """Replace anything shaped like a KeyTrail secret, so a refused payload can be dead-lettered safely."""
    return _SECRET_ANYWHERE.sub(rb"kt_\1_[REDACTED]", payload)
