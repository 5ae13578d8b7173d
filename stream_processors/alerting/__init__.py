"""Alerting on idle, never-used, anomalous, expiring, over-quota and revoked-but-used keys.

Pure decisions live in `decide` (no I/O); `engine.AlertEngine` wraps them with a store, a
dispatcher (outbox + webhook/Slack delivery) and the key store. Wire it with
`wiring.build_alert_engine(clickhouse, keystore)`; see docs/alerts.md.
"""

from keytrail.stream_processors.alerting.engine import AlertEngine, CycleReport
from keytrail.stream_processors.alerting.model import Alert, AlertStatus
from keytrail.stream_processors.alerting.rules import AlertRules, load_alert_rules
from keytrail.stream_processors.alerting.schedule import PeriodicScan, register_faust_timer, run_periodically
from keytrail.stream_processors.alerting.wiring import build_alert_engine

__all__ = [
    "Alert",
    "AlertEngine",
    "AlertRules",
    "AlertStatus",
    "CycleReport",
    "PeriodicScan",
    "build_alert_engine",
    "load_alert_rules",
    "register_faust_timer",
    "run_periodically",
]
