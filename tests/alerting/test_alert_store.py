"""The ClickHouse alert store and delivery log give the same answers on chDB and on a server."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlparse, urlunparse

import pytest

from keytrail.sql.backends import ChdbBackend, open_clickhouse
from keytrail.sql.migrate import migrate
from keytrail.stream_processors.alerting.decide import acknowledge, decide, findings_from_signals, resolve
from keytrail.stream_processors.alerting.model import AlertStatus
from keytrail.stream_processors.alerting.rules import AlertRules
from keytrail.stream_processors.alerting.store import (
    ClickHouseAlertStore,
    ClickHouseDeliveryLog,
    Delivery,
    DeliveryState,
)
from tests.alerting.builders import NOW, revoked_use_signal


@pytest.fixture(params=["chdb", "server"])
def backend(request, tmp_path, unique):
    if request.param == "chdb":
        instance = ChdbBackend(tmp_path / "chdb")
    else:
        url = request.getfixturevalue("clickhouse_server_url")
        parsed = urlparse(url)
        instance = open_clickhouse(urlunparse(parsed._replace(path=f"/keytrail_alerting_{unique}")))
    try:
        migrate(instance)
        yield instance
    finally:
        instance.close()


def test_alert_versions_round_trip_and_the_newest_wins(backend):
    store = ClickHouseAlertStore(backend)
    rules = AlertRules()
    opened = decide({}, findings_from_signals([revoked_use_signal()], rules), [], NOW, rules).changed[0]
    acked = acknowledge(opened, "alice", NOW)  # same millisecond: still a strictly later version
    store.save([opened])
    store.save([acked])
    assert store.get(opened.alert_id) == acked
    assert list(store.active()) == [opened.dedupe_key]
    assert store.active({"other_key"}) == {} and store.active(set()) == {}
    done = resolve(acked, "bob", NOW + timedelta(minutes=1), "rotated")
    store.save([done])
    assert store.active() == {}
    assert [a.status for a in store.list(status=AlertStatus.RESOLVED, project_id="proj_a")] == [
        AlertStatus.RESOLVED
    ]
    assert store.list(key_id="nobody") == []


def test_delivery_log_keeps_the_newest_state(backend):
    log = ClickHouseDeliveryLog(backend)
    pending = Delivery("d-1", "alt_1", "oncall", 1, DeliveryState.PENDING, 0, "", NOW, NOW, '{"a":1}')
    log.save(pending)
    assert log.pending() == [pending]
    sent = pending.advanced(NOW, state=DeliveryState.SENT, attempts=2, last_error="HTTP 500: down")
    log.save(sent)
    assert log.pending() == [] and log.get("d-1") == sent and log.list("alt_1") == [sent]
