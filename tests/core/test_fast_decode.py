"""The msgspec fast path never accepts what the pydantic contract refuses, and yields equal values."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keytrail.schemas.codec import InvalidEvent, decode_usage_event, decode_usage_event_strictly
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.schemas.usage_fast import FastUsageEvent, decode_fast
from tests.factories import usage_event

FIELDS = list(KeyUsageEvent.model_fields)


def _schema_facts(schema: dict, defs: dict) -> dict[str, dict]:
    """Per property: the constraints both schema dialects express the same way."""
    facts = {}
    for name, prop in schema["properties"].items():
        if "$ref" in prop:
            prop = {**defs[prop["$ref"].split("/")[-1]], **{k: v for k, v in prop.items() if k != "$ref"}}
        fact = {k: prop[k] for k in ("type", "minLength", "maxLength", "minimum", "maximum", "enum", "default")
                if k in prop}
        if "const" in prop:
            fact["enum"] = [prop["const"]]
        if "enum" in fact:  # both dialects list the same values, in different orders and with/without a type
            fact["enum"] = sorted(fact["enum"], key=str)
            fact.pop("type", None)
        if "pattern" in prop:
            fact["pattern"] = prop["pattern"].replace("\\Z", "$")
        if fact.get("type") == "string" and prop.get("format") == "uuid":
            fact["format"] = "uuid"
        facts[name] = fact
    return facts


def test_mirror_declares_the_same_fields_bounds_and_defaults_as_the_contract():
    pydantic_schema = KeyUsageEvent.model_json_schema()
    (fast_ref,), fast_defs = msgspec.json.schema_components([FastUsageEvent])
    fast_schema = fast_defs["FastUsageEvent"]
    assert list(fast_schema["properties"]) == FIELDS
    assert sorted(fast_schema["required"]) == sorted(pydantic_schema["required"])
    pydantic_facts = _schema_facts(pydantic_schema, pydantic_schema.get("$defs", {}))
    fast_facts = _schema_facts(fast_schema, fast_defs)
    for name in FIELDS:
        expected = {k: v for k, v in pydantic_facts[name].items() if k != "format"}
        actual = {k: v for k, v in fast_facts[name].items() if k != "format"}
        assert actual == expected, name


def _as_dict(event) -> dict:
    return {name: getattr(event, name) for name in FIELDS}


def _valid() -> dict:
    return orjson.loads(usage_event().model_dump_json())


texts = st.one_of(
    st.text(max_size=70),
    st.sampled_from(["key_a", "key_a\n", " key_a", "KEY.a:b-c_d", "a" * 64, "a" * 65, "", "-x", "GET", "get",
                     "GET\n", "10.1.2.3", "10.1.2.3\n", "::ffff:10.1.2.3", "2001:db8::1", "2001:DB8:0::1",
                     "010.1.2.3", "1.2.3.4/24", "kt_live_AbCdEfGhIjKlMnOpQrStUvWxYz012345_1a2B", "é" * 64]),
)
timestamps = st.one_of(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1),
                 timezones=st.sampled_from([UTC, None, datetime.now().astimezone().tzinfo])).map(
        lambda d: d.isoformat()),
    st.sampled_from(["2026-11-02T09:00:00Z", "2026-11-02T09:00:00.123456789Z", "2026-11-02 09:00:00Z",
                     "2026-11-02T09:00:00+24:00", "2026-11-02T09:00:00.1+01:30", "2026-11-02T09:00:00",
                     "2026-11-02", "1762074000", "2026-11-02T09:00:60Z", "2026-W45-1T09:00:00Z"]),
    st.integers(min_value=0, max_value=2**40),
    st.floats(allow_nan=False),
)
numbers = st.one_of(st.integers(min_value=-10, max_value=2**54), st.floats(), st.booleans(),
                    st.sampled_from(["200", "2e2", None, 200.0, 200.5, 1e400 if False else 999.0, 1000]))
uuids = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: u.hex), st.uuids().map(lambda u: str(u).upper()),
                  st.uuids().map(lambda u: "{" + str(u) + "}"), st.uuids().map(lambda u: u.urn), texts)
values_by_field = {
    "event_id": uuids,
    "schema_version": st.sampled_from([1, 2, "1", 1.0, True, None]),
    "occurred_at": timestamps,
    "status": numbers,
    "latency_ms": numbers,
    "request_bytes": numbers,
    "response_bytes": numbers,
    "outcome": st.sampled_from(["ok", "denied", "OK", "rate_limited", "maybe", 1]),
}


@st.composite
def mutated_payloads(draw) -> bytes:
    data = _valid()
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        name = draw(st.sampled_from(FIELDS + ["extra"]))
        action = draw(st.sampled_from(["set", "set", "drop"]))
        if action == "drop":
            data.pop(name, None)
        else:
            data[name] = draw(values_by_field.get(name, texts))
    return orjson.dumps(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_payloads())
def test_whatever_the_fast_path_accepts_the_contract_accepts_with_equal_values(payload):
    fast = decode_fast(payload)
    try:
        reference = KeyUsageEvent.model_validate_json(payload)
    except ValueError:
        assert fast is None, payload
        return
    if fast is not None:
        assert _as_dict(fast) == _as_dict(reference)
        assert fast.occurred_at.utcoffset() == timedelta(0)


@settings(max_examples=300, deadline=None)
@given(st.uuids(), st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)),
       st.sampled_from(["10.0.0.1", "2001:db8::7", "192.168.1.254"]))
def test_events_from_our_own_producers_take_the_fast_path(event_id, occurred_at, client_ip):
    event = usage_event(event_id=event_id, at=occurred_at, client_ip=client_ip)
    fast = decode_fast(event.model_dump_json().encode())
    assert fast is not None
    assert _as_dict(fast) == _as_dict(event)


def test_lax_but_valid_input_is_still_accepted_through_the_contract():
    data = _valid() | {"status": "200", "occurred_at": "2026-11-02T10:00:00.123+01:00"}
    payload = orjson.dumps(data)
    assert decode_fast(payload) is None or decode_fast(payload).status == 200
    event = decode_usage_event(payload)
    assert event.status == 200
    assert event == decode_usage_event_strictly(payload)


def test_fast_path_normalises_time_and_address_like_the_contract():
    data = _valid() | {"occurred_at": "2026-11-02T10:00:00.123456+01:00", "client_ip": "2001:DB8:0::1",
                       "event_id": str(uuid.uuid4())}
    fast = decode_fast(orjson.dumps(data))
    assert fast is not None
    assert fast.occurred_at == datetime(2026, 11, 2, 9, 0, 0, 123000, tzinfo=UTC)
    assert fast.client_ip == "2001:db8::1"


@pytest.mark.parametrize("payload", [b"{not json", orjson.dumps(_valid() | {"extra": 1}), b"[]", b"null"])
def test_refusals_still_carry_the_contract_reason(payload):
    with pytest.raises(InvalidEvent) as caught:
        decode_usage_event(payload)
    assert caught.value.reason
