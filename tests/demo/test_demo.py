"""`keytrail demo` end to end: a short run must catch every injected incident and stay quiet on normal keys."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    data_dir = tmp_path_factory.mktemp("demo-data")
    report = data_dir / "report.json"
    env = {**os.environ, "KEYTRAIL_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.pop("KEYTRAIL_CLICKHOUSE_URL", None)
    env.pop("KEYTRAIL_KEYSTORE_URL", None)
    completed = subprocess.run(
        [sys.executable, "-m", "keytrail.console.demo", "--duration", "20", "--speed", "120",
         "--port", str(_free_port()), "--no-browser-hint", "--report", str(report)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert report.exists(), f"the demo wrote no report (exit {completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
    return json.loads(report.read_text()), completed.stdout


@pytest.mark.slow
def test_every_incident_raises_its_signal_and_alert(demo_run: tuple[dict, str]) -> None:
    report, output = demo_run
    incidents = [k for k in report["keys"] if k["incident"]]
    assert {k["incident"] for k in incidents} == {
        "leaked key", "revoked key still tried", "dormant key wakes up", "route probing",
        "key left idle", "key about to expire",
    }
    for key in incidents:
        assert set(key["expect_signals"]) <= set(key["signals"]), (key, output)
        assert set(key["expect_alerts"]) <= set(key["alerts"]), (key, output)


@pytest.mark.slow
def test_normal_keys_raise_nothing(demo_run: tuple[dict, str]) -> None:
    report, output = demo_run
    normal = [k for k in report["keys"] if not k["incident"]]
    assert len(normal) >= 3
    for key in normal:
        assert key["signals"] == [] and key["alerts"] == [], (key, output)


@pytest.mark.slow
def test_demo_prints_where_to_look_and_what_was_caught(demo_run: tuple[dict, str]) -> None:
    report, output = demo_run
    assert report["url"] in output
    assert "/v1/alerts?status=open" in output and "/v1/usage/key_networks?key_id=" in output
    assert "What KeyTrail caught" in output
    assert report["events"] > 10_000
