"""UsageEnvelope v1: many KeyUsageEvents in one Kafka record of `keytrail.usage.v1`.

Faust pays about 200 µs of CPU per Kafka record whatever its size, so producers group events
per partition into envelopes. The wire form is one JSON object,

    {"envelope_version": 1, "events": [<KeyUsageEvent v1>, ...]}

with the record headers `keytrail-envelope: 1` and `keytrail-count: <number of events>`, and the
first event's `key_id` as the record key. Every event of an envelope belongs to the record's
partition (Java-compatible murmur2 of its `key_id`, see `keytrail.schemas.partitioning`), so
per-key order holds. The worker accepts single events and envelopes mixed on the same topic;
each event inside an envelope is validated, deduplicated and dead-lettered on its own, and the
results are identical however a stream is split into records.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from keytrail.schemas.usage import KeyUsageEvent

ENVELOPE_HEADER: Final = "keytrail-envelope"
"""Header naming the envelope version (`1`); a record without it carries a single event."""
COUNT_HEADER: Final = "keytrail-count"
"""Header with the number of events in the envelope, as ASCII digits."""
ENVELOPE_VERSION: Final = 1
MAX_ENVELOPE_EVENTS: Final = 500
"""Default and upper bound of events per envelope."""
MAX_ENVELOPE_BYTES: Final = 512 * 1024
"""Upper bound of an envelope's JSON before Kafka compression."""

ENVELOPE_PREFIX: Final = b'{"envelope_version":1,"events":['
ENVELOPE_SUFFIX: Final = b"]}"


class UsageEnvelope(BaseModel):
    """Up to `MAX_ENVELOPE_EVENTS` usage events of one partition, in their order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    envelope_version: Literal[1] = 1
    events: Annotated[list[KeyUsageEvent], Field(min_length=1, max_length=MAX_ENVELOPE_EVENTS)]


def encode_envelope(encoded_events: list[bytes]) -> bytes:
    """The envelope's wire bytes from events already encoded as contract JSON (no re-validation)."""
    return ENVELOPE_PREFIX + b",".join(encoded_events) + ENVELOPE_SUFFIX


def envelope_headers(count: int) -> list[tuple[str, bytes]]:
    """The Kafka headers of an envelope of `count` events."""
    return [(ENVELOPE_HEADER, b"1"), (COUNT_HEADER, str(count).encode())]
