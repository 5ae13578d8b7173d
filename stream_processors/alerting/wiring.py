"""Building the alert engine from configuration, for the embedded server and the worker."""

from __future__ import annotations

from typing import Any

from keytrail.sql.backends import ClickHouseBackend
from keytrail.stream_processors.alerting.delivery import AlertDispatcher, WebhookSender
from keytrail.stream_processors.alerting.engine import AlertEngine
from keytrail.stream_processors.alerting.rules import AlertRules, load_alert_rules
from keytrail.stream_processors.alerting.store import ClickHouseAlertStore, ClickHouseDeliveryLog
from keytrail.stream_processors.alerting.usage import ClickHouseUsage


def build_alert_engine(
    clickhouse: ClickHouseBackend,
    keystore: Any | None = None,
    rules: AlertRules | None = None,
    *,
    sender: WebhookSender | None = None,
    **engine_kwargs: Any,
) -> AlertEngine:
    """An engine on ClickHouse (alerts, alert_deliveries, key_usage_minute; migrations already applied),
    with channels and thresholds from `rules` (default: `load_alert_rules()`, i.e. file + environment)."""
    rules = rules or load_alert_rules()
    deliveries = ClickHouseDeliveryLog(clickhouse)
    dispatcher = AlertDispatcher.from_rules(deliveries, rules, sender=sender)
    return AlertEngine(
        ClickHouseAlertStore(clickhouse),
        rules,
        dispatcher=dispatcher,
        keystore=keystore,
        usage=ClickHouseUsage(clickhouse),
        **engine_kwargs,
    )
