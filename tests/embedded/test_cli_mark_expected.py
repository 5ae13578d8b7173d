"""`keytrail signals mark-expected` / `alerts mark-expected` on the embedded default (chDB + SQLite)."""

from __future__ import annotations

import socket

import orjson
import pytest
from typer.testing import CliRunner

from keytrail.console.cli_alerts import alerts_app
from keytrail.console.cli_signals import signals_app
from keytrail.console.embedded import EmbeddedPipeline
from keytrail.settings import Settings, get_settings
from tests.embedded.feedback_scenario import (
    AGAIN_PUBLIC_IP,
    day_zero,
    first_public_use,
    renumbered_then_public_again,
)

PROJECT = "proj_fb"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYTRAIL_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("KEYTRAIL_CLICKHOUSE_URL", raising=False)
    monkeypatch.delenv("KEYTRAIL_KEYSTORE_URL", raising=False)
    monkeypatch.setenv("KEYTRAIL_API_URL", f"http://127.0.0.1:{_closed_port()}")  # no console: the CLI opens the store
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _pipeline(data_dir) -> EmbeddedPipeline:  # noqa: ANN001
    return EmbeddedPipeline(Settings(data_dir=data_dir, _env_file=None))


def _new_network_signals(runner: CliRunner) -> list[dict]:
    listed = runner.invoke(signals_app, ["list", "--json", "--since", "60d", "--kind", "new_network"])
    assert listed.exit_code == 0, listed.output
    return orjson.loads(listed.output)


def test_marking_a_signal_expected_teaches_its_key_only_and_is_audited_once(data_dir):
    start = day_zero()
    pipeline = _pipeline(data_dir)
    try:
        key_a, secret = pipeline.keystore.create_key("vendor a", PROJECT)
        key_b, _ = pipeline.keystore.create_key("vendor b", PROJECT)
        pipeline.ingest(first_public_use(key_a.id, PROJECT, start) + first_public_use(key_b.id, PROJECT, start))
    finally:
        pipeline.close()
    runner = CliRunner()
    signals = _new_network_signals(runner)
    assert sorted(s["key_id"] for s in signals) == sorted([key_a.id, key_b.id])
    signal_a = next(s for s in signals if s["key_id"] == key_a.id)

    reason = f"the vendor's VPN; they pasted {secret} into the ticket"
    marked = runner.invoke(signals_app, ["mark-expected", signal_a["signal_id"], "--reason", reason,
                                         "--actor", "cli:alice", "--json"])
    assert marked.exit_code == 0, marked.output
    assert secret not in marked.output
    (mark,) = orjson.loads(marked.output)["marks"]
    assert (mark["key_id"], mark["kind"], mark["learnt_by"], mark["already_marked"]) == (
        key_a.id, "new_network", "new_network", False)
    assert "[REDACTED" in mark["reason"] and mark["actor"] == "cli:alice"

    twice = runner.invoke(signals_app, ["mark-expected", signal_a["signal_id"], "--json"])
    assert twice.exit_code == 0, twice.output
    (again,) = orjson.loads(twice.output)["marks"]
    assert again["already_marked"] is True and again["feedback_id"] == mark["feedback_id"]

    unknown = runner.invoke(signals_app, ["mark-expected", "00000000-0000-0000-0000-000000000000"])
    assert unknown.exit_code == 1 and "signal_not_found" in unknown.output

    pipeline = _pipeline(data_dir)
    try:
        result = pipeline.ingest(renumbered_then_public_again(key_a.id, PROJECT, start)
                                 + renumbered_then_public_again(key_b.id, PROJECT, start))
        assert pipeline.feedback.taught == 1
        audit = pipeline.clickhouse.query(
            "SELECT key_id, actor, reason FROM key_lifecycle_events FINAL WHERE action = 'marked_expected'")
        history = pipeline.keystore.lifecycle_events(key_a.id)
    finally:
        pipeline.close()
    again_signals = [(s.key_id, s.evidence["ips"]) for s in result.signals if s.kind.value == "new_network"]
    assert again_signals == [(key_b.id, [AGAIN_PUBLIC_IP])]
    assert [(row["key_id"], row["actor"]) for row in audit] == [(key_a.id, "cli:alice")]
    assert secret not in audit[0]["reason"] and signal_a["signal_id"] in audit[0]["reason"]
    assert [e.action.value for e in history][-1] == "marked_expected"


def test_marking_an_alert_expected_teaches_its_signals_and_resolves_it(data_dir):
    start = day_zero()
    pipeline = _pipeline(data_dir)
    try:
        key_a, _ = pipeline.keystore.create_key("vendor a", PROJECT)
        pipeline.ingest(first_public_use(key_a.id, PROJECT, start))
    finally:
        pipeline.close()
    runner = CliRunner()
    listed = runner.invoke(alerts_app, ["list", "--json", "--key", key_a.id])
    assert listed.exit_code == 0, listed.output
    (alert,) = [a for a in orjson.loads(listed.output) if a["rule"] == "new_network"]
    marked = runner.invoke(alerts_app, ["mark-expected", alert["alert_id"], "--reason", "vendor VPN", "--json"])
    assert marked.exit_code == 0, marked.output
    body = orjson.loads(marked.output)
    assert body["alert"]["status"] == "resolved" and "marked expected: vendor VPN" in body["alert"]["resolution"]
    assert [m["signal_id"] for m in body["marks"]] == alert["signal_ids"]
    missing = runner.invoke(alerts_app, ["mark-expected", "alt_nope"])
    assert missing.exit_code == 1 and "alert_not_found" in missing.output
