"""Webhook delivery to a real HTTP receiver: body, signature, retries, and no duplicates across a restart."""

from __future__ import annotations

import time

import orjson
import pytest

from keytrail.sql.backends import ChdbBackend
from keytrail.sql.migrate import migrate
from keytrail.stream_processors.alerting.delivery import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    AlertDispatcher,
    WebhookSender,
    sign,
    slack_body,
    verify_signature,
)
from keytrail.stream_processors.alerting.rules import AlertRules
from keytrail.stream_processors.alerting.store import (
    ClickHouseAlertStore,
    ClickHouseDeliveryLog,
    DeliveryState,
    InMemoryAlertStore,
    InMemoryDeliveryLog,
)
from tests.alerting.builders import SECRET, engine_on, fast_sender, revoked_use_signal, webhook_rules
from tests.alerting.receiver import http_receiver


@pytest.fixture
def clickhouse(chdb_path):
    backend = ChdbBackend(chdb_path)
    try:
        migrate(backend)
        yield backend
    finally:
        backend.close()


def test_alert_is_delivered_as_signed_json_with_a_delivery_id():
    with http_receiver() as receiver:
        engine = engine_on(InMemoryAlertStore(), InMemoryDeliveryLog(), webhook_rules(receiver.url))
        report = engine.handle_signals([revoked_use_signal()])
        engine.close()

    assert len(report.opened) == 1 and len(receiver.requests) == 1
    request = receiver.requests[0]
    body = orjson.loads(request.body)
    assert body["event"] == "alert.opened"
    assert body["alert"]["rule"] == "use_of_inactive_key"
    assert body["alert"]["evidence"]["ips"] == ["203.0.113.7"]
    assert request.headers["content-type"] == "application/json"
    assert request.headers[DELIVERY_HEADER.lower()] == body["delivery_id"]
    assert verify_signature(SECRET.encode(), request.headers[SIGNATURE_HEADER.lower()], request.body)
    assert report.deliveries[0].state is DeliveryState.SENT and report.deliveries[0].attempts == 1


def test_signature_fails_for_another_secret_a_changed_body_or_a_stale_timestamp():
    body = b'{"a":1}'
    now = int(time.time())
    header = sign(b"right", now, body)
    assert verify_signature(b"right", header, body)
    assert not verify_signature(b"wrong", header, body)
    assert not verify_signature(b"right", header, b'{"a":2}')
    assert not verify_signature(b"right", sign(b"right", now - 3600, body), body)
    assert not verify_signature(b"right", "garbage", body)


def test_delivery_is_retried_after_the_receiver_fails_twice_and_the_log_counts_attempts(clickhouse):
    sleeps: list[float] = []
    with http_receiver(fail_first=2) as receiver:
        deliveries = ClickHouseDeliveryLog(clickhouse)
        engine = engine_on(
            ClickHouseAlertStore(clickhouse),
            deliveries,
            webhook_rules(receiver.url),
            sender=fast_sender(sleep=sleeps.append),
        )
        report = engine.handle_signals([revoked_use_signal()])
        engine.close()

    assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert len(receiver.delivery_ids()) == 1
    assert sleeps == [0.01, 0.02], "exponential backoff between attempts"
    (logged,) = deliveries.list(report.opened[0].alert_id)
    assert logged.state is DeliveryState.SENT and logged.attempts == 3


def test_delivery_gives_up_after_max_attempts_and_records_the_last_error():
    with http_receiver(fail_first=100) as receiver:
        deliveries = InMemoryDeliveryLog()
        engine = engine_on(
            InMemoryAlertStore(), deliveries, webhook_rules(receiver.url), sender=fast_sender(max_attempts=3)
        )
        engine.handle_signals([revoked_use_signal()])
        engine.close()
    (logged,) = deliveries.list()
    assert logged.state is DeliveryState.FAILED and logged.attempts == 3
    assert "HTTP 500" in logged.last_error


class WorkerCrash(BaseException):
    """The process dies: after the receiver got the request, before the outcome was recorded."""


class CrashingSender(WebhookSender):
    def send(self, *args, **kwargs):  # noqa: ANN002, ANN003
        super().send(*args, **kwargs)
        raise WorkerCrash


def test_no_duplicate_notification_when_the_worker_restarts_mid_delivery(clickhouse):
    signal = revoked_use_signal()
    with http_receiver() as receiver:
        rules = webhook_rules(receiver.url)
        first = engine_on(
            ClickHouseAlertStore(clickhouse),
            ClickHouseDeliveryLog(clickhouse),
            rules,
            sender=CrashingSender(backoff_s=0.01),
        )
        with pytest.raises(WorkerCrash):
            first.handle_signals([signal])
        assert len(receiver.requests) == 1
        assert [d.state for d in ClickHouseDeliveryLog(clickhouse).pending()] == [DeliveryState.PENDING]

        # restart: fresh objects, state only in ClickHouse; Kafka hands over the uncommitted signal again
        second = engine_on(ClickHouseAlertStore(clickhouse), ClickHouseDeliveryLog(clickhouse), rules)
        resent = second.start()
        replayed = second.handle_signals([signal])
        second.start()  # a further restart has nothing left to send
        second.close()

    assert [d.state for d in resent] == [DeliveryState.SENT]
    assert replayed.opened == [] and replayed.deliveries == []
    assert len(receiver.delivery_ids()) == 1, "the resend carries the same X-KeyTrail-Delivery id"
    assert receiver.requests[0].body == receiver.requests[-1].body
    assert ClickHouseDeliveryLog(clickhouse).pending() == []
    assert len(ClickHouseAlertStore(clickhouse).list()) == 1


def test_restart_after_the_alert_is_stored_does_not_notify_again(clickhouse):
    signal = revoked_use_signal()
    with http_receiver() as receiver:
        rules = webhook_rules(receiver.url)
        first = engine_on(ClickHouseAlertStore(clickhouse), ClickHouseDeliveryLog(clickhouse), rules)
        first.handle_signals([signal])
        first.close()
        second = engine_on(ClickHouseAlertStore(clickhouse), ClickHouseDeliveryLog(clickhouse), rules)
        second.start()
        second.handle_signals([signal, revoked_use_signal(ip="203.0.113.7")])
        second.close()
    assert len(receiver.requests) == 1


def test_slack_channel_gets_text_and_blocks():
    with http_receiver() as receiver:
        rules = AlertRules(slack_webhook_url=receiver.url)
        dispatcher = AlertDispatcher.from_rules(InMemoryDeliveryLog(), rules, sender=fast_sender())
        engine = engine_on(InMemoryAlertStore(), InMemoryDeliveryLog(), rules)
        engine.dispatcher = dispatcher
        report = engine.handle_signals([revoked_use_signal()])
        engine.close()
    body = orjson.loads(receiver.requests[0].body)
    assert set(body) == {"text", "blocks"}
    assert "use_of_inactive_key" in body["text"] and "203.0.113.7" in orjson.dumps(body["blocks"]).decode()
    assert body == slack_body(report.opened[0], "opened", receiver.requests[0].headers["x-keytrail-delivery"])
    assert SIGNATURE_HEADER.lower() not in receiver.requests[0].headers
