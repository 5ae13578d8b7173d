"""Delivery: signed JSON webhooks and Slack-compatible messages, retried with backoff, through an outbox.

Idempotence: every (alert, notification round, channel) has one delivery id. The delivery is
recorded as `pending` (with the exact body) BEFORE the first attempt and marked `sent` or `failed`
AFTER. A worker that dies mid-delivery resends its pending deliveries on start with the same id and
body, so a receiver that dedupes on `X-KeyTrail-Delivery` notifies a human exactly once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import httpx
import orjson

from keytrail.schemas.timestamps import format_utc_millis, to_utc_millis, utc_now
from keytrail.stream_processors.alerting.model import Alert, Notification, delivery_id_for
from keytrail.stream_processors.alerting.rules import AlertRules, Channel
from keytrail.stream_processors.alerting.store import Delivery, DeliveryLog, DeliveryState

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-KeyTrail-Signature"
DELIVERY_HEADER = "X-KeyTrail-Delivery"
EVENT_HEADER = "X-KeyTrail-Event"
PAYLOAD_VERSION = 1


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The X-KeyTrail-Signature value: `t=<unix seconds>,v1=<hex HMAC-SHA-256 of "t.body">`."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: bytes, header: str, body: bytes, *, now: float | None = None, tolerance_s: int = 300
) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale timestamps (replays)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


def webhook_body(alert: Alert, reason: str, delivery_id: str) -> dict:
    """The generic webhook JSON body (documented in docs/alerts.md)."""
    return {
        "version": PAYLOAD_VERSION,
        "delivery_id": delivery_id,
        "event": f"alert.{reason}",
        "alert": alert.model_dump(mode="json"),
    }


_SEVERITY_EMOJI = {
    "info": ":information_source:",
    "low": ":large_blue_circle:",
    "medium": ":large_yellow_circle:",
    "high": ":large_orange_circle:",
    "critical": ":red_circle:",
}


def slack_body(alert: Alert, reason: str, delivery_id: str) -> dict:
    """A Slack-compatible incoming-webhook message: `text` for notifications, `blocks` for the layout."""
    title = f"{_SEVERITY_EMOJI.get(alert.severity.value, '')} [{alert.severity.value.upper()}] {alert.rule} on key {alert.key_id}"
    fields = [
        {"type": "mrkdwn", "text": f"*Project*\n{alert.project_id}"},
        {"type": "mrkdwn", "text": f"*Status*\n{alert.status.value} ({reason})"},
        {"type": "mrkdwn", "text": f"*Opened*\n{format_utc_millis(alert.opened_at)}"},
        {"type": "mrkdwn", "text": f"*Alert*\n`{alert.alert_id}`"},
    ]
    evidence = "\n".join(
        f"• *{name}*: {', '.join(values[:5])}" for name, values in alert.evidence.items() if values
    )
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": alert.message[:2900] or alert.rule}},
        {"type": "section", "fields": fields},
    ]
    if evidence:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": evidence[:2900]}})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"delivery {delivery_id} · `keytrail alerts ack {alert.alert_id}`"}
            ],
        }
    )
    return {"text": f"{title}: {alert.message}"[:3000], "blocks": blocks}


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    attempts: int
    error: str = ""


class WebhookSender:
    """POSTs a body with timeouts and retries (exponential backoff) on connection errors, 429 and 5xx."""

    def __init__(
        self,
        *,
        timeout_s: float = 5.0,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._clock = clock
        self._client = httpx.Client(timeout=timeout_s, transport=transport, follow_redirects=False)

    def send(
        self, channel: Channel, delivery_id: str, body: bytes, event: str, attempts_before: int = 0
    ) -> SendResult:
        attempts = attempts_before
        delay = self.backoff_s
        error = ""
        for attempt in range(self.max_attempts):
            if attempt:
                self._sleep(min(delay, self.max_backoff_s))
                delay *= 2
            attempts += 1
            headers = {
                "Content-Type": "application/json",
                DELIVERY_HEADER: delivery_id,
                EVENT_HEADER: event,
                "User-Agent": "keytrail-alerting/1",
            }
            if channel.secret is not None:
                headers[SIGNATURE_HEADER] = sign(
                    channel.secret.get_secret_value().encode(), int(self._clock()), body
                )
            try:
                response = self._client.post(channel.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "alert delivery %s to %s failed (attempt %d): %s",
                    delivery_id,
                    channel.name,
                    attempts,
                    error,
                )
                continue
            if response.is_success:
                return SendResult(True, attempts)
            error = f"HTTP {response.status_code}: {response.text[:200]}"
            log.warning(
                "alert delivery %s to %s refused (attempt %d): %s", delivery_id, channel.name, attempts, error
            )
            if response.status_code != 429 and response.status_code < 500:
                break
        return SendResult(False, attempts, error)

    def close(self) -> None:
        self._client.close()


_RENDERERS = {"webhook": webhook_body, "slack": slack_body}


class AlertDispatcher:
    """Notifications -> outbox -> channels. Safe to call again after a crash: pending ones are resent as they were."""

    def __init__(
        self,
        deliveries: DeliveryLog,
        channels: Sequence[Channel],
        sender: WebhookSender | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.deliveries = deliveries
        self.channels = list(channels)
        self.sender = sender or WebhookSender()
        self._clock = clock

    @classmethod
    def from_rules(cls, deliveries: DeliveryLog, rules: AlertRules, **kwargs) -> AlertDispatcher:  # noqa: ANN003
        sender = kwargs.pop("sender", None) or WebhookSender(
            timeout_s=rules.delivery_timeout_seconds,
            max_attempts=rules.delivery_max_attempts,
            backoff_s=rules.delivery_backoff_seconds,
            max_backoff_s=rules.delivery_max_backoff_seconds,
        )
        return cls(deliveries, rules.all_channels(), sender, **kwargs)

    def record(self, notifications: Sequence[Notification]) -> list[Delivery]:
        """Write the outbox rows (state pending) for these notifications; returns the ones still to send."""
        now = to_utc_millis(self._clock())
        todo: list[Delivery] = []
        for notification in notifications:
            alert = notification.alert
            for channel in self.channels:
                if alert.severity.rank < channel.min_severity.rank:
                    continue
                delivery_id = delivery_id_for(alert.alert_id, alert.notify_round, channel.name)
                existing = self.deliveries.get(delivery_id)
                if existing is not None:
                    if existing.state is DeliveryState.PENDING:
                        todo.append(existing)
                    continue
                body = _RENDERERS[channel.format](alert, notification.reason, delivery_id)
                delivery = Delivery(
                    delivery_id=delivery_id,
                    alert_id=alert.alert_id,
                    channel=channel.name,
                    round=alert.notify_round,
                    state=DeliveryState.PENDING,
                    attempts=0,
                    last_error="",
                    created_at=now,
                    updated_at=now,
                    payload=orjson.dumps(body).decode(),
                )
                self.deliveries.save(delivery)
                todo.append(delivery)
        return todo

    def send(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Attempt each pending delivery (with retries) and record the outcome."""
        done = []
        channels = {c.name: c for c in self.channels}
        for delivery in deliveries:
            channel = channels.get(delivery.channel)
            if channel is None:
                updated = delivery.advanced(
                    self._clock(),
                    state=DeliveryState.FAILED,
                    last_error=f"channel {delivery.channel!r} is no longer configured",
                )
            else:
                event = (
                    str(orjson.loads(delivery.payload).get("event", "alert"))
                    if channel.format == "webhook"
                    else "alert"
                )
                result = self.sender.send(
                    channel, delivery.delivery_id, delivery.payload.encode(), event, delivery.attempts
                )
                updated = delivery.advanced(
                    self._clock(),
                    state=DeliveryState.SENT if result.ok else DeliveryState.FAILED,
                    attempts=result.attempts,
                    last_error=result.error,
                )
            self.deliveries.save(updated)
            done.append(updated)
        return done

    def dispatch(self, notifications: Sequence[Notification]) -> list[Delivery]:
        return self.send(self.record(notifications))

    def resend_pending(self) -> list[Delivery]:
        """After a restart: send what was recorded but not confirmed, with the same delivery id and body."""
        return self.send(self.deliveries.pending())

    def close(self) -> None:
        self.sender.close()
