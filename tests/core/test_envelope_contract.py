"""The envelope contract and the partitioner every producer shares."""

import orjson
import pytest
from pydantic import ValidationError

from keytrail.schemas.envelope import (
    MAX_ENVELOPE_EVENTS,
    UsageEnvelope,
    encode_envelope,
    envelope_headers,
)
from keytrail.schemas.export import json_schemas
from keytrail.schemas.partitioning import murmur2, partition_for
from tests.factories import usage_event as make_event

JAVA_MURMUR2_VECTORS = {
    # Apache Kafka's UtilsTest.testMurmur2
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), JAVA_MURMUR2_VECTORS.items())
def test_murmur2_matches_the_java_client(data, expected):
    assert murmur2(data) == expected


def test_partition_is_the_positive_hash_modulo_partitions():
    assert partition_for("foobar", 8) == (-790332482 & 0x7FFFFFFF) % 8
    assert all(0 <= partition_for(f"key_{i}", 3) < 3 for i in range(100))


def test_encoded_envelope_is_the_pydantic_envelope():
    events = [make_event(key_id=f"key_{i % 3}") for i in range(5)]
    wire = encode_envelope([e.model_dump_json().encode() for e in events])
    envelope = UsageEnvelope.model_validate_json(wire)
    assert envelope.events == events
    assert orjson.loads(wire)["envelope_version"] == 1
    assert dict(envelope_headers(5)) == {"keytrail-envelope": b"1", "keytrail-count": b"5"}


def test_envelope_bounds_and_unknown_fields_are_refused():
    event = make_event().model_dump(mode="json")
    with pytest.raises(ValidationError):
        UsageEnvelope.model_validate({"envelope_version": 1, "events": []})
    with pytest.raises(ValidationError):
        UsageEnvelope.model_validate({"envelope_version": 1, "events": [event] * (MAX_ENVELOPE_EVENTS + 1)})
    with pytest.raises(ValidationError):
        UsageEnvelope.model_validate({"envelope_version": 2, "events": [event]})
    with pytest.raises(ValidationError):
        UsageEnvelope.model_validate({"envelope_version": 1, "events": [event], "extra": 1})


def test_envelope_json_schema_is_published():
    schema = json_schemas()["usage-envelope.v1"]
    assert schema["properties"]["events"]["maxItems"] == MAX_ENVELOPE_EVENTS
