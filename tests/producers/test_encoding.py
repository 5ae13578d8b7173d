"""The fast encoder writes exactly what `KeyUsageEvent.model_dump_json()` writes, and refuses
exactly what the model refuses."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keytrail.producers.encoding import EventIds, UsageEncoder
from keytrail.schemas.codec import InvalidEvent, decode_usage_event, decode_usage_event_strictly
from keytrail.schemas.secrets import identifier_holds_secret
from keytrail.schemas.usage import KeyUsageEvent, Outcome

identifiers = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}", fullmatch=True).filter(
    lambda s: not identifier_holds_secret(s)  # the contract refuses ids holding a secret (schemas/secrets.py)
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2026, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30))]),
)
fields_strategy = st.fixed_dictionaries(
    {
        "event_id": st.uuids(),
        "occurred_at": moments,
        "key_id": identifiers,
        "project_id": identifiers,
        "service": st.text(min_size=1, max_size=128),
        "method": st.from_regex(r"[A-Z]{1,16}", fullmatch=True),
        "route": st.text(min_size=1, max_size=512),
        "status": st.integers(0, 999),
        "outcome": st.sampled_from(list(Outcome)),
        "client_ip": st.ip_addresses().map(str),
    },
    optional={
        "latency_ms": st.floats(0, 86_400_000, allow_nan=False) | st.integers(0, 86_400_000),
        "request_bytes": st.integers(0, 2**53),
        "response_bytes": st.integers(0, 2**53),
        "user_agent": st.text(max_size=512),
        "request_id": st.text(max_size=128),
        "schema_version": st.just(1),
    },
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields_strategy)
def test_encoded_bytes_equal_the_models_json_byte_for_byte(fields):
    model = KeyUsageEvent(**fields)
    expected = model.model_dump_json().encode()
    encoder = UsageEncoder()
    for attempt in range(2):  # the second round is served from the encoder's caches
        key, value = encoder.encode(
            dict(fields, event_id=str(fields["event_id"]).upper() if attempt else fields["event_id"])
        )
        assert value == expected
        assert key == model.key_id.encode()
    assert encoder.encode_event(model) == (model.key_id.encode(), expected)
    assert decode_usage_event_strictly(value) == model
    assert decode_usage_event(value).model_dump_json() == model.model_dump_json()  # the fast path agrees


def test_defaults_are_a_fresh_id_and_now():
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    key, value = UsageEncoder().encode(
        {
            "key_id": "key_a",
            "project_id": "p",
            "service": "s",
            "method": "GET",
            "route": "/x",
            "status": 200,
            "outcome": "ok",
            "client_ip": "10.0.0.1",
        }
    )
    event = decode_usage_event(value)
    assert before <= event.occurred_at <= datetime.now(UTC)
    assert event.event_id.version == 4
    assert (event.latency_ms, event.request_bytes, event.user_agent) == (0.0, 0, "")


def test_epoch_seconds_are_accepted_and_truncated_to_milliseconds():
    _, value = UsageEncoder().encode(
        {
            "key_id": "key_a",
            "project_id": "p",
            "service": "s",
            "method": "GET",
            "route": "/x",
            "status": 200,
            "outcome": "ok",
            "client_ip": "10.0.0.1",
            "occurred_at": 1_767_225_600.1239,
        }
    )
    assert orjson.loads(value)["occurred_at"] == "2026-01-01T00:00:00.123Z"


def test_event_ids_are_unique_and_change_prefix_in_a_forked_child():
    ids = EventIds()
    seen = {ids.new() for _ in range(10_000)}
    assert len(seen) == 10_000
    assert all(uuid.UUID(i).version == 4 for i in list(seen)[:50])
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, ids.new().encode())
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(read, 64).decode()
    assert from_child[:24] != ids.new()[:24]


VALID = {
    "key_id": "key_a",
    "project_id": "proj",
    "service": "orders",
    "method": "GET",
    "route": "/v1/x",
    "status": 200,
    "outcome": "ok",
    "client_ip": "10.0.0.1",
    "occurred_at": datetime(2025, 1, 1, tzinfo=UTC),
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"key_id": "kt_live_AbCdEfGhIjKlMnOpQrStUvWxYz012345_1a2B3c"}, "key_id"),
        ({"key_id": "has space"}, "key_id"),
        ({"key_id": ""}, "key_id"),
        ({"project_id": "x" * 65}, "project_id"),
        ({"method": "get"}, "method"),
        ({"route": ""}, "route"),
        ({"route": "/" * 513}, "route"),
        ({"status": 1000}, "status"),
        ({"status": "200"}, "status"),
        ({"outcome": "maybe"}, "outcome"),
        ({"latency_ms": -1.0}, "latency_ms"),
        ({"latency_ms": float("nan")}, "latency_ms"),
        ({"request_bytes": -5}, "request_bytes"),
        ({"response_bytes": 2**53 + 1}, "response_bytes"),
        ({"client_ip": "not-an-ip"}, "client_ip"),
        ({"user_agent": "u" * 513}, "user_agent"),
        ({"request_id": "r" * 129}, "request_id"),
        ({"event_id": "nope"}, "event_id"),
        ({"schema_version": 2}, "schema_version"),
        ({"occurred_at": datetime(2025, 1, 1)}, "occurred_at"),
        ({"occurred_at": datetime.now(UTC) + timedelta(hours=1)}, "occurred_at"),
        ({"surprise": 1}, "surprise"),
        ({"service": None}, "service"),
        ({"route": "/\ud800"}, "Unicode"),
    ],
)
def test_what_the_model_refuses_the_encoder_refuses_naming_the_field(change, field):
    fields = {k: v for k, v in {**VALID, **change}.items() if v is not None}
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError, or a UnicodeError
        KeyUsageEvent(**fields).model_dump_json().encode()
    with pytest.raises(InvalidEvent, match=field) as refused:
        UsageEncoder().encode(fields)
    assert refused.value.code == "schema_violation"


def test_a_refusal_never_echoes_the_value():
    secret = "kt_live_AbCdEfGhIjKlMnOpQrStUvWxYz012345_1a2B3c"
    with pytest.raises(InvalidEvent) as refused:
        UsageEncoder().encode({**VALID, "key_id": secret})
    assert secret not in str(refused.value)


middleware_shaped = st.fixed_dictionaries(
    {
        "occurred_at": st.floats(946_684_801.0, 1_767_225_600.0),
        "key_id": identifiers,
        "project_id": identifiers,
        "service": st.text(min_size=1, max_size=128),
        "method": st.sampled_from(["GET", "POST", "DELETE", "OTHER"]),
        "route": st.text(min_size=1, max_size=512),
        "status": st.integers(0, 999),
        "outcome": st.sampled_from([o.value for o in Outcome]),
        "latency_ms": st.floats(0, 86_400_000, allow_nan=False),
        "request_bytes": st.integers(0, 2**53),
        "response_bytes": st.integers(0, 2**53),
        "client_ip": st.ip_addresses().map(str),
        "user_agent": st.text(max_size=512),
        "request_id": st.text(max_size=128),
    }
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(middleware_shaped)
def test_the_middleware_fast_path_writes_the_models_json_too(fields):
    encoder = UsageEncoder()
    for _ in range(2):  # first sight takes the general path, the repeat the cached fast path
        key, value = encoder.encode(fields)
        sent = orjson.loads(value)
        expected = KeyUsageEvent(
            **{
                **fields,
                "event_id": sent["event_id"],
                "occurred_at": datetime.fromtimestamp(int(fields["occurred_at"] * 1000) / 1000, UTC),
            }
        )
        assert value == expected.model_dump_json().encode()
        assert key == fields["key_id"].encode()
