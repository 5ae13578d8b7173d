"""KeyUsageEvent v1: the wire contract every producer, in any language, emits per request."""

import re
import time
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache
from ipaddress import ip_address
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from keytrail.schemas.secrets import identifier_holds_secret
from keytrail.schemas.timestamps import UtcMillis

MAX_FUTURE_SKEW = timedelta(minutes=5)
"""Events stamped further than this in the future are rejected (clock bugs, forged events)."""

_MAX_FUTURE_SKEW_S = MAX_FUTURE_SKEW.total_seconds()


@lru_cache(maxsize=65_536)
def normalise_ip(value: str) -> str | None:
    """The canonical text of an IPv4/IPv6 address, or None; cached because services reuse few addresses."""
    try:
        return str(ip_address(value))
    except ValueError:
        return None


SECRET_SHAPE = re.compile(r"^kt_[a-z0-9]+_[A-Za-z0-9]{20,}_[A-Za-z0-9]{4,}$")
"""What a whole KeyTrail secret looks like. Identifiers are checked with the one scanner
(`keytrail.schemas.secrets`), which finds a secret in any position or decoration (`<secret>.`,
`x<secret>`) and of any vendor's shape; this anchored form stays for callers that match whole keys."""

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]


class Outcome(StrEnum):
    """What the service decided for the request, as seen by its key check."""

    OK = "ok"
    DENIED = "denied"
    INVALID = "invalid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    DISABLED = "disabled"
    RATE_LIMITED = "rate_limited"
    ERROR = "error"


DENIAL_OUTCOMES = frozenset(
    {Outcome.DENIED, Outcome.INVALID, Outcome.EXPIRED, Outcome.REVOKED, Outcome.DISABLED, Outcome.RATE_LIMITED}
)
"""Outcomes where the request was refused because of the key (not a server error)."""


class KeyUsageEvent(BaseModel):
    """One authenticated (or attempted) request made with an API key.

    `event_id` is the idempotency key: the same event delivered twice is counted once.
    `key_id` is the key's public id, never the secret.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    event_id: UUID
    schema_version: Literal[1] = 1
    occurred_at: UtcMillis
    key_id: Identifier
    project_id: Identifier
    service: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    method: Annotated[str, StringConstraints(min_length=1, max_length=16, pattern=r"^[A-Z]+$")]
    route: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    status: Annotated[int, Field(ge=0, le=999)]
    outcome: Outcome
    latency_ms: Annotated[float, Field(ge=0, le=86_400_000)] = 0.0
    request_bytes: Annotated[int, Field(ge=0, le=2**53)] = 0
    response_bytes: Annotated[int, Field(ge=0, le=2**53)] = 0
    client_ip: Annotated[str, StringConstraints(min_length=2, max_length=45)]
    user_agent: Annotated[str, StringConstraints(max_length=512)] = ""
    request_id: Annotated[str, StringConstraints(max_length=128)] = ""

    @field_validator("key_id", "project_id")
    @classmethod
    def _identifier_is_not_a_secret(cls, value: str, info) -> str:  # type: ignore[no-untyped-def]
        if identifier_holds_secret(value):
            raise ValueError(
                f"{info.field_name} holds something shaped like a secret key; "
                "send the key's public id, never the secret"
            )
        return value

    @field_validator("client_ip")
    @classmethod
    def _client_ip_is_an_address(cls, value: str) -> str:
        normalised = normalise_ip(value)
        if normalised is None:
            raise ValueError("client_ip must be an IPv4 or IPv6 address")
        return normalised

    @field_validator("occurred_at")
    @classmethod
    def _not_in_the_future(cls, value):  # type: ignore[no-untyped-def]
        if value.timestamp() - time.time() > _MAX_FUTURE_SKEW_S:
            raise ValueError(f"occurred_at is more than {int(_MAX_FUTURE_SKEW_S)} s in the future")
        return value
