"""The one secret scanner: every vendor shape, in any position, redacted; the prefilter never
misses what the scanner finds; key ids holding a secret are refused by both decoders."""

from __future__ import annotations

import base64
import json
import secrets
import string
import uuid

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keytrail.keystore.key_format import generate_key
from keytrail.schemas.codec import InvalidEvent, decode_usage_event, decode_usage_event_strictly
from keytrail.schemas.secrets import (
    find_secrets,
    payload_may_hold_secret,
    redact_text,
    scrub_event,
    scrub_events,
    secret_exposed_signal,
)
from keytrail.schemas.signals import SignalKind
from keytrail.schemas.usage_fast import FastUsageEvent, decode_fast
from tests.factories import usage_event

ALNUM = string.ascii_letters + string.digits


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def planted_secrets() -> dict[str, str]:
    """One fresh secret of every kind the scanner promises to find."""
    return {
        "keytrail_key": generate_key("live"),
        "aws_access_key": "AKIA" + _random(string.ascii_uppercase + string.digits, 16),
        "github_token": "ghp_" + _random(ALNUM, 36),
        "github_pat": "github_pat_11" + _random(ALNUM, 20) + "_" + _random(ALNUM, 40),
        "slack_token": "xoxb-" + _random(string.digits, 12) + "-" + _random(ALNUM, 24),
        "stripe_key": "sk_live_" + _random(ALNUM, 24),
        "google_api_key": "AIza" + _random(ALNUM + "_-", 35),
        "jwt": "eyJhbGciOiJIUzI1NiJ9." + base64.urlsafe_b64encode(b'{"sub":"' + _random(ALNUM, 12).encode()
                                                                 + b'"}').decode().rstrip("=")
        + "." + _random(ALNUM + "_-", 43),
        "private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + _random(ALNUM, 40),
        "aws_secret_key": base64.b64encode(secrets.token_bytes(30)).decode(),
        "opaque_token": _random(ALNUM, 48),
    }


DECORATIONS = ["{}", "x{}", "{}.", "a:{}", "{}-1", "prefix/{}/suffix", "ua {} tail", "{}{}"]


@pytest.mark.parametrize("decoration", DECORATIONS)
def test_every_vendor_secret_is_found_and_redacted_in_any_position(decoration):
    for kind, secret in planted_secrets().items():
        text = decoration.format(secret, secret) if decoration.count("{}") == 2 else decoration.format(secret)
        assert find_secrets(text), (kind, decoration)
        redacted = redact_text(text)
        assert secret not in redacted, (kind, decoration)
        assert "[REDACTED:" in redacted
        # nothing long of the secret is left either (no partial leak)
        assert not any(secret[i : i + 12] in redacted for i in range(0, len(secret) - 12)), (kind, redacted)


def test_bearer_tokens_and_url_passwords_are_redacted_but_the_words_kept():
    assert redact_text("Authorization: Bearer abcdef123456") == "Authorization: Bearer [REDACTED:bearer_token]"
    assert redact_text("https://admin:hunter2@db.example.com/x") == (
        "https://admin:[REDACTED:url_password]@db.example.com/x"
    )


BENIGN = [
    str(uuid.uuid4()),
    uuid.uuid4().hex,
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "aws-sdk-java/2.20.1 Linux/5.10 OpenJDK_64-Bit_Server_VM/17.0.6+10-LTS",
    "/v1/organizations/{organization_id}/subscriptions/{subscription_id}/invoices",
    "/api/v2/customers/accounts/subscriptions/items",
    "key_" + "aB3dE5gH7jK9mN1pQ3sT",
    "2026-11-02T09:00:00.123Z",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    "orders-api",
]


@pytest.mark.parametrize("text", BENIGN)
def test_ordinary_values_are_not_taken_for_secrets(text):
    assert find_secrets(text) == []
    assert redact_text(text) == text


def test_random_tokens_of_32_characters_and_more_are_found():
    missed = [t for t in (_random(ALNUM, n) for n in (32, 40, 64) for _ in range(300)) if not find_secrets(t)]
    assert len(missed) <= 3, missed  # fewer than 1 in 300 windows of random text score below the bar


# ------------------------------------------------------------------ the prefilter

def _envelope(events: list[dict]) -> bytes:
    return orjson.dumps(events)


def _clean_event_dict(**overrides) -> dict:
    event = orjson.loads(usage_event(key_id="key_" + _random(ALNUM, 20), request_id=str(uuid.uuid4()),
                                     user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0",
                                     event_id=uuid.uuid4()).model_dump_json())
    event.update(overrides)
    return event


def test_prefilter_passes_a_clean_envelope_of_500_events():
    assert not payload_may_hold_secret(_envelope([_clean_event_dict() for _ in range(500)]))


@pytest.mark.parametrize("field", ["user_agent", "route", "request_id", "service"])
def test_prefilter_flags_an_envelope_with_one_planted_secret(field):
    for secret in planted_secrets().values():
        events = [_clean_event_dict() for _ in range(500)]
        events[317][field] = "x" + secret[:100] + "."
        assert payload_may_hold_secret(_envelope(events)), (field, secret)


def test_prefilter_sees_through_json_escapes():
    secret = "AKIA" + _random(string.ascii_uppercase + string.digits, 16)
    escaped = json.dumps({"user_agent": secret}).replace("A", "\\u0041", 1).encode()
    assert b"AKIA" not in escaped and json.loads(escaped)["user_agent"] == secret
    assert payload_may_hold_secret(escaped)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_prefilter_never_says_clean_when_the_scanner_finds_something(text):
    if find_secrets(text):
        assert payload_may_hold_secret(orjson.dumps({"user_agent": text}))
        assert payload_may_hold_secret(json.dumps({"user_agent": text}).encode())
        assert payload_may_hold_secret(json.dumps({"user_agent": text}).replace("/", "\\/").encode())


def test_prefilter_sees_a_base64_secret_whose_slashes_are_escaped():
    secret = "Ab3dEf9hIj2LmN0pQr/StUvWx7Za1Bc4De6Fg8Hi"  # 40 characters, a slash in the middle
    assert find_secrets(secret)
    raw = json.dumps({"user_agent": secret}).replace("/", "\\/").encode()
    assert json.loads(raw)["user_agent"] == secret
    assert payload_may_hold_secret(raw)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(planted_secrets())), st.text(max_size=40), st.text(max_size=40))
def test_prefilter_flags_any_planted_secret_whatever_surrounds_it(kind, before, after):
    secret = planted_secrets()[kind]
    text = before + secret + after
    assert find_secrets(text)
    assert payload_may_hold_secret(json.dumps({"route": text}).encode())


# ------------------------------------------------------------------ events

@pytest.mark.parametrize("field", ["user_agent", "route", "request_id", "service"])
def test_scrub_event_redacts_both_event_types_and_names_the_field(field):
    secret = planted_secrets()["github_token"]
    event = usage_event(**{field: f"x{secret}."})
    fast = decode_fast(event.model_dump_json().encode())
    assert isinstance(fast, FastUsageEvent)
    for candidate in (event, fast):
        scrubbed, fields = scrub_event(candidate)
        assert fields == [field]
        assert type(scrubbed) is type(candidate)
        assert secret not in scrubbed.model_dump_json()
        assert getattr(scrubbed, field) == "x[REDACTED:github_token]."
        # still a valid contract event
        assert decode_usage_event_strictly(scrubbed.model_dump_json()).model_dump() == scrubbed.to_model().model_dump() \
            if isinstance(scrubbed, FastUsageEvent) else decode_usage_event_strictly(scrubbed.model_dump_json())


def test_a_redaction_never_makes_an_event_longer_than_the_contract_allows():
    secret = "AKIA" + _random(string.ascii_uppercase + string.digits, 16)
    event = usage_event(user_agent="a" * 492 + secret, request_id="b" * 108 + secret)
    scrubbed, fields = scrub_event(event)
    assert sorted(fields) == ["request_id", "user_agent"]
    decode_usage_event_strictly(scrubbed.model_dump_json())  # raises if invalid


def test_clean_events_pass_as_the_same_objects():
    events = [usage_event(seconds=i) for i in range(300)]
    batch = scrub_events(events)
    assert batch.redacted_events == 0 and batch.signals == []
    assert all(a is b for a, b in zip(batch.events, events, strict=True))


def test_the_secret_exposed_signal_names_field_and_key_never_the_secret():
    secret = planted_secrets()["stripe_key"]
    events = [usage_event(seconds=i) for i in range(200)]
    events[150] = usage_event(key_id="key_leaky", seconds=150, user_agent=f"client {secret}", route=f"/x/{secret}")
    batch = scrub_events(events)
    assert batch.redacted_events == 1
    (signal,) = batch.signals
    assert signal.kind is SignalKind.SECRET_EXPOSED and signal.key_id == "key_leaky"
    assert signal.evidence["fields"] == ["route", "user_agent"]
    assert "user_agent" in signal.message and "key_leaky" in signal.message
    assert secret not in signal.model_dump_json()
    again = secret_exposed_signal(events[150], ["user_agent", "route"], ["stripe_key"])
    assert again.signal_id == signal.signal_id  # deterministic: a replay raises the same signal


# ------------------------------------------------------------------ key ids

@pytest.mark.parametrize("decoration", ["{}", "{}.", "x{}", "a:{}", "{}:b", "key-{}"])
@pytest.mark.parametrize("kind", ["keytrail_key", "aws_access_key", "github_token", "stripe_key", "opaque_token"])
def test_a_key_id_holding_a_secret_is_refused_by_both_decoders(decoration, kind):
    secret = planted_secrets()[kind]
    key_id = decoration.format(secret)[:64]
    payload = orjson.loads(usage_event().model_dump_json())
    payload["key_id"] = key_id
    raw = orjson.dumps(payload)
    assert decode_fast(raw) is None
    with pytest.raises(InvalidEvent) as refused:
        decode_usage_event(raw)
    assert "key_id" in refused.value.reason and secret not in refused.value.reason
    payload["key_id"] = "key_ok"
    payload["project_id"] = key_id
    with pytest.raises(InvalidEvent):
        decode_usage_event(orjson.dumps(payload))
