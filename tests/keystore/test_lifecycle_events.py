"""Every admin action is recorded in the outbox and handed to the lifecycle sink, never with secrets."""

import logging

import pytest

from keytrail.keystore import (
    InvalidKeyRequest,
    KeyAlreadyRotated,
    KeyNotFound,
    KeyStateConflict,
    KeyStore,
    PermissionDenied,
    UnsupportedStoreUrl,
)
from keytrail.keystore.errors import KeyStoreError
from keytrail.keystore.key_format import parse_key
from keytrail.schemas.lifecycle import LifecycleAction
from tests.keystore.conftest import SECRET


class FlakySink:
    """Refuses events until `healthy` is set."""

    def __init__(self) -> None:
        self.healthy = False
        self.events = []

    def publish(self, event) -> None:
        if not self.healthy:
            raise ConnectionError("broker unreachable")
        self.events.append(event)


def test_a_change_survives_a_sink_outage_and_its_event_is_published_later(store_url, clock, project):
    sink = FlakySink()
    with KeyStore.open(store_url, SECRET, lifecycle_sink=sink, clock=clock) as store:
        record, _ = store.create_key("k", project)
        store.revoke(record.id)
        assert store.get(record.id).status == "revoked"  # the change is committed regardless
        assert sink.events == []
        sink.healthy = True
        assert store.publish_pending_events() == 2
        assert [(event.key_id, event.action) for event in sink.events] == [
            (record.id, LifecycleAction.CREATED),
            (record.id, LifecycleAction.REVOKED),
        ]
        assert store.publish_pending_events() == 0  # marked published


def test_a_store_without_sink_keeps_events_for_whoever_drains_them(store_url, project, sink):
    with KeyStore.open(store_url, SECRET) as cli_store:
        record, _ = cli_store.create_key("k", project)
    with KeyStore.open(store_url, SECRET, lifecycle_sink=sink) as server_store:
        assert server_store.publish_pending_events() == 1
    assert sink.events[0].key_id == record.id and sink.events[0].action is LifecycleAction.CREATED


def test_events_carry_actor_and_public_records_but_no_secret_or_hash(store, sink, project):
    record, secret = store.create_key("k", project, actor="dana")
    rotation = store.rotate(record.id, actor="dana")
    payloads = " ".join(event.model_dump_json() for event in sink.events)
    assert sink.events[0].actor == "dana" and sink.events[0].after["id"] == record.id
    for secret_text in (secret, rotation.secret):
        assert parse_key(secret_text).random not in payloads
    assert "key_hash" not in payloads


def test_secrets_never_reach_the_logs(store_url, project, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.DEBUG)  # even with SQL echo on
    try:
        with KeyStore.open(store_url, SECRET) as store:
            record, secret = store.create_key("k", project)
            store.verify(secret)
            rotation = store.rotate(record.id)
            store.verify(rotation.secret)
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    assert "api_keys" in caplog.text  # the SQL was logged, so the check below looked at something
    for secret_text in (secret, rotation.secret):
        assert parse_key(secret_text).random not in caplog.text


def test_a_pasted_secret_is_not_echoed_in_error_messages(store, project):
    _, secret = store.create_key("k", project)
    with pytest.raises(KeyNotFound) as missing:
        store.get(secret)
    assert parse_key(secret).random not in str(missing.value)
    assert "secret" in str(missing.value)


def test_every_error_has_its_own_stable_code_and_a_json_body():
    errors = [
        KeyNotFound,
        PermissionDenied,
        InvalidKeyRequest,
        KeyStateConflict,
        KeyAlreadyRotated,
        UnsupportedStoreUrl,
    ]
    codes = [error.code for error in errors]
    assert len(set(codes)) == len(codes) and KeyStoreError.code not in codes
    assert all(issubclass(error, KeyStoreError) for error in errors)
    assert KeyNotFound("key_x").to_dict() == {
        "code": "key_not_found",
        "message": "no key 'key_x' in the projects you can access; check the id with `keytrail keys list`",
    }
