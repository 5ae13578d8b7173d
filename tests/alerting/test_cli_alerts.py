"""`keytrail alerts list|ack|resolve` against chDB."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from keytrail.console.cli_alerts import alerts_app
from keytrail.settings import get_settings
from keytrail.sql.backends import ChdbBackend
from keytrail.sql.migrate import migrate
from keytrail.stream_processors.alerting.engine import AlertEngine
from keytrail.stream_processors.alerting.store import ClickHouseAlertStore
from tests.alerting.builders import NOW, revoked_use_signal

runner = CliRunner()


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    chdb = tmp_path / "chdb"
    monkeypatch.setenv("KEYTRAIL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KEYTRAIL_CLICKHOUSE_URL", f"chdb://{chdb}")
    monkeypatch.setenv("KEYTRAIL_MODE", "embedded")
    monkeypatch.setenv("COLUMNS", "250")
    get_settings.cache_clear()
    backend = ChdbBackend(chdb)
    try:
        migrate(backend)
        engine = AlertEngine(ClickHouseAlertStore(backend), clock=lambda: NOW)
        report = engine.handle_signals(
            [revoked_use_signal("key_a"), revoked_use_signal("key_b", project_id="proj_b")]
        )
    finally:
        backend.close()
    yield {a.key_id: a.alert_id for a in report.opened}
    get_settings.cache_clear()


def test_list_ack_resolve(seeded):
    result = runner.invoke(alerts_app, ["list"])
    assert result.exit_code == 0, result.output
    assert "key_a" in result.output and "use_of_inactive_key" in result.output

    listed = json.loads(runner.invoke(alerts_app, ["list", "--json", "--project", "proj_b"]).output)
    assert [a["key_id"] for a in listed] == ["key_b"]

    alert_id = seeded["key_a"]
    result = runner.invoke(alerts_app, ["ack", alert_id, "--actor", "alice"])
    assert result.exit_code == 0, result.output
    acked = json.loads(runner.invoke(alerts_app, ["list", "--json", "--status", "acknowledged"]).output)
    assert [(a["alert_id"], a["acknowledged_by"]) for a in acked] == [(alert_id, "alice")]

    result = runner.invoke(alerts_app, ["resolve", alert_id, "--reason", "rotated", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == "resolved"
    remaining = json.loads(
        runner.invoke(alerts_app, ["list", "--json", "--key", "key_a", "--status", "open"]).output
    )
    assert remaining == []


def test_unknown_alert_and_wrong_state_are_one_line_errors(seeded):
    result = runner.invoke(alerts_app, ["ack", "alt_nope"])
    assert result.exit_code == 1 and "no alert with id 'alt_nope'" in result.output
    alert_id = seeded["key_b"]
    assert runner.invoke(alerts_app, ["resolve", alert_id]).exit_code == 0
    result = runner.invoke(alerts_app, ["ack", alert_id])
    assert result.exit_code == 1 and "already" not in result.output and "resolved" in result.output
