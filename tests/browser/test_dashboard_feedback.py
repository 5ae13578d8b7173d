"""The dashboard's "Expected" button on a signal: the detector learns it and the audit trail says who and why."""

from __future__ import annotations

import httpx
import pytest

from tests.browser.test_dashboard import sign_in
from tests.embedded.feedback_scenario import day_zero, first_public_use

pytestmark = pytest.mark.slow


def test_marking_a_signal_expected_from_the_dashboard(page, server, artifacts_dir):
    from playwright.sync_api import expect

    auth = {"Authorization": f"Bearer {server.admin_key}"}
    created = httpx.post(f"{server.url}/v1/keys", headers=auth, json={"name": "vendor", "project_id": "proj-dash"})
    assert created.status_code == 201, created.text
    key_id = created.json()["key"]["id"]
    events = [e.model_dump(mode="json") for e in first_public_use(key_id, "proj-dash", day_zero())]
    ingested = httpx.post(f"{server.url}/v1/events", headers=auth, json={"events": events}, timeout=30)
    assert ingested.status_code == 200, ingested.text

    sign_in(page, server)
    page.click("a[href='#/alerts']")
    row = page.locator("[data-testid=signals-table] tr", has_text="new_network").filter(has_text=key_id)
    row.locator("[data-expect-signal]").click()
    expect(page.locator("#expect")).to_be_visible()
    page.fill("#expect-reason", "the vendor's VPN")
    page.click("#expect-submit")
    expect(page.locator("#toast")).to_contain_text(f"new_network learns it for {key_id}")
    expect(row.locator("[data-marked-expected]")).to_have_text("expected")  # the page reloads with the mark
    page.screenshot(path=str(artifacts_dir / "dashboard-marked-expected.png"), full_page=True)

    audit = httpx.get(f"{server.url}/v1/usage/key_audit", headers=auth, params={"key_id": key_id}).json()["rows"]
    marks = [r for r in audit if r["action"] == "marked_expected"]
    assert len(marks) == 1 and "the vendor's VPN" in marks[0]["reason"] and marks[0]["actor"].startswith("api:")


def test_the_cli_marks_through_a_running_console(server):
    """`keytrail serve` owns the chDB directory: `keytrail signals mark-expected` goes through its API."""
    import os
    import subprocess
    import sys

    import orjson

    auth = {"Authorization": f"Bearer {server.admin_key}"}
    key_id = httpx.post(f"{server.url}/v1/keys", headers=auth,
                        json={"name": "cli vendor", "project_id": "proj-cli"}).json()["key"]["id"]
    events = [e.model_dump(mode="json") for e in first_public_use(key_id, "proj-cli", day_zero())]
    assert httpx.post(f"{server.url}/v1/events", headers=auth, json={"events": events}, timeout=30).status_code == 200
    (signal,) = httpx.get(f"{server.url}/v1/signals", headers=auth,
                          params={"key_id": key_id, "kind": "new_network", "since": "60d"}).json()["rows"]
    env = {**os.environ, "KEYTRAIL_DATA_DIR": str(server.data_dir), "KEYTRAIL_API_URL": server.url}
    env.pop("KEYTRAIL_CLICKHOUSE_URL", None)
    env.pop("KEYTRAIL_KEYSTORE_URL", None)
    done = subprocess.run([sys.executable, "-m", "keytrail.console.cli", "signals", "mark-expected",
                           signal["signal_id"], "--reason", "through the console", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    (mark,) = orjson.loads(done.stdout)["marks"]
    assert mark["key_id"] == key_id and mark["learnt_by"] == "new_network" and mark["actor"].startswith("api:")
    missing = subprocess.run([sys.executable, "-m", "keytrail.console.cli", "signals", "mark-expected",
                              "00000000-0000-0000-0000-000000000000"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 1 and "signal_not_found" in missing.stderr + missing.stdout
