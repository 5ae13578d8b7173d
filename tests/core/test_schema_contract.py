"""KeyUsageEvent v1 is strict: bad input is refused with a reason that names the field."""

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from keytrail.schemas.codec import InvalidEvent, decode_usage_event
from keytrail.schemas.usage import KeyUsageEvent
from tests.factories import usage_event


def _raw(**changes):
    data = orjson.loads(usage_event().model_dump_json())
    data.update(changes)
    return orjson.dumps({k: v for k, v in data.items() if v is not ...})


def test_valid_event_round_trips_with_millisecond_utc_timestamps():
    event = decode_usage_event(_raw(occurred_at="2026-11-02T10:00:00.123456+01:00"))
    assert event.occurred_at == datetime(2026, 11, 2, 9, 0, 0, 123000, tzinfo=UTC)
    assert orjson.loads(event.model_dump_json())["occurred_at"] == "2026-11-02T09:00:00.123Z"


@pytest.mark.parametrize(
    ("payload", "code", "mentions"),
    [
        (b"{not json", "bad_json", "JSON"),
        (_raw(status="two hundred"), "schema_violation", "status"),
        (_raw(extra_field=1), "schema_violation", "extra_field"),
        (_raw(outcome="maybe"), "schema_violation", "outcome"),
        (_raw(route="/" + "x" * 600), "schema_violation", "route"),
        (_raw(occurred_at="2026-11-02T09:00:00"), "schema_violation", "timezone"),
        (_raw(client_ip="not-an-ip"), "schema_violation", "client_ip"),
        (_raw(key_id="kt_live_AbCdEfGhIjKlMnOpQrStUvWxYz012345_1a2B"), "schema_violation", "secret"),
        (_raw(event_id=...), "schema_violation", "event_id"),
        (b"", "empty_payload", "empty"),
        (b"{" + b" " * 20000 + b"}", "oversize_payload", "exceeds"),
    ],
)
def test_invalid_payloads_are_refused_with_a_reason(payload, code, mentions):
    with pytest.raises(InvalidEvent) as caught:
        decode_usage_event(payload)
    assert caught.value.code == code
    assert mentions in caught.value.reason


def test_event_far_in_the_future_is_refused():
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    with pytest.raises(InvalidEvent, match="future"):
        decode_usage_event(_raw(occurred_at=future))


def test_rejection_reason_does_not_echo_the_submitted_value():
    secret_like = "kt_live_AbCdEfGhIjKlMnOpQrStUvWxYz012345_1a2B"
    with pytest.raises(InvalidEvent) as caught:
        decode_usage_event(_raw(key_id=secret_like))
    assert secret_like not in caught.value.reason


def test_schema_version_other_than_1_is_refused():
    with pytest.raises(InvalidEvent, match="schema_version"):
        decode_usage_event(_raw(schema_version=2))


def test_ipv6_addresses_are_normalised():
    event = KeyUsageEvent.model_validate_json(_raw(client_ip="2001:0db8:0000::0001", event_id=str(uuid.uuid4())))
    assert event.client_ip == "2001:db8::1"


def test_secret_shaped_strings_are_redacted_before_dead_lettering():
    from keytrail.schemas.codec import redact_secrets

    payload = b'{"key_id": "kt_live_AbCdEfGhIjKlMnOpQrStUvWxYz012345_1a2B", "x": 1}'
    redacted = redact_secrets(payload)
    assert b"AbCdEfGhIjKlMnOpQrStUvWxYz012345" not in redacted
    assert b"kt_live_[REDACTED]" in redacted
