"""The dashboard in a real headless Chromium against a real `keytrail serve`."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

pytestmark = pytest.mark.slow


def sign_in(page, server) -> None:
    page.goto(server.url + "/")
    page.fill("#login-key", server.admin_key)
    page.click("#login-submit")
    page.wait_for_selector("[data-testid=keys-table]")


def usage_events(key_id: str, project: str, count: int) -> list[dict]:
    now = datetime.now(UTC)
    routes = ["/v1/orders", "/v1/orders/{id}", "/v1/payments"]
    events = []
    for i in range(count):
        outcome, status = ("ok", 200)
        if i % 11 == 0:
            outcome, status = ("error", 503)
        elif i % 7 == 0:
            outcome, status = ("denied", 403)
        events.append(
            {
                "event_id": str(uuid.uuid4()),
                "occurred_at": (now - timedelta(minutes=(i * 37) % (23 * 60))).isoformat(),
                "key_id": key_id,
                "project_id": project,
                "service": "shop-api",
                "method": "GET",
                "route": routes[i % 3],
                "status": status,
                "outcome": outcome,
                "latency_ms": 12.5,
                "client_ip": f"203.0.113.{10 + i % 4}",
                "user_agent": "shop-client/2.1" if i % 5 else "curl/8.5",
            }
        )
    return sorted(events, key=lambda e: e["occurred_at"])  # in event-time order: none is late


def test_create_use_and_revoke_a_key_from_the_dashboard(page, server, artifacts_dir):
    from playwright.sync_api import expect

    sign_in(page, server)
    page.click("#new-key")
    page.fill("#create-form [name=name]", "checkout-service")
    page.fill("#create-form [name=project_id]", "shop")
    page.fill("#create-form [name=owner]", "payments@example.com")
    page.check("#create-form [value='project:read']")
    page.check("#create-form [value='ingest']")
    page.click("#create-submit")

    secret_box = page.locator("[data-testid=secret]")
    expect(secret_box).to_have_text(re.compile(r"^kt_live_\S+$"))
    secret = secret_box.inner_text()
    page.screenshot(path=str(artifacts_dir / "dashboard-secret-once.png"))
    page.click("#secret-done")
    expect(page.locator("#secret")).not_to_be_visible()
    assert secret not in page.content(), "the secret must not stay in the page once the dialog is closed"

    row = page.locator("tr[data-key-id]", has_text="checkout-service")
    expect(row.locator("[data-testid=last-used]")).to_have_text("-")
    key_id = row.get_attribute("data-key-id")
    assert key_id and secret not in key_id

    auth = {"Authorization": f"Bearer {secret}"}
    ingest = httpx.post(
        f"{server.url}/v1/events", headers=auth, json={"events": usage_events(key_id, "shop", 120)}
    )
    assert (
        ingest.status_code == 200 and ingest.json()["accepted"] == 120
    )  # first: later uses move the key's watermark
    assert httpx.get(f"{server.url}/v1/keys/{key_id}", headers=auth).status_code == 200

    for _ in range(40):  # the console's own usage is flushed into the pipeline every 0.5 s
        page.reload()
        cell = page.locator("tr[data-key-id]", has_text="checkout-service").locator("[data-testid=last-used]")
        cell.wait_for()
        if cell.inner_text() != "-":
            break
        page.wait_for_timeout(250)
    expect(cell).to_have_text(re.compile(r"ago$"))
    page.screenshot(path=str(artifacts_dir / "dashboard-keys.png"), full_page=True)

    page.click(f"tr[data-key-id='{key_id}'] a")
    expect(page.locator("[data-testid=key-last-used]")).to_have_text(re.compile(r"ago$"))
    expect(page.locator("#totals")).to_contain_text("requests")
    page.wait_for_selector("#routes table")
    page.screenshot(path=str(artifacts_dir / "dashboard-key.png"), full_page=True)

    page.click("a[href='#/keys']")
    page.locator(f"tr[data-key-id='{key_id}'] [data-act=revoke]").click()
    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-ok")
    expect(page.locator(f"tr[data-key-id='{key_id}'] [data-status]")).to_have_text("revoked")
    page.screenshot(path=str(artifacts_dir / "dashboard-revoked.png"), full_page=True)

    refused = httpx.get(f"{server.url}/v1/keys/{key_id}", headers=auth)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "key_revoked"
    assert secret not in refused.text


def test_alerts_page_renders(page, server, artifacts_dir):
    sign_in(page, server)
    page.click("a[href='#/alerts']")
    page.wait_for_selector("#signals >> text=/signal|Detected/i")
    page.screenshot(path=str(artifacts_dir / "dashboard-alerts.png"), full_page=True)


def test_a_wrong_key_keeps_the_login_open(page, server):
    page.goto(server.url + "/")
    page.fill("#login-key", "kt_live_notavalidkeyatall_xxxx")
    page.click("#login-submit")
    page.wait_for_selector("#login-error:not(:empty)")
    assert page.locator("#login").is_visible()


def test_expiry_is_coloured_and_filters_narrow_the_records(page, server, artifacts_dir):
    from playwright.sync_api import expect

    admin = {"Authorization": f"Bearer {server.admin_key}"}

    def create(name: str, expires_in: str) -> str:
        body = {"name": name, "project_id": "colours", "expires_in": expires_in}
        response = httpx.post(f"{server.url}/v1/keys", headers=admin, json=body)
        assert response.status_code == 201
        return response.json()["key"]["id"]

    soon, later, never, old = (
        create("nightly-export", "1d"),
        create("mobile-app", "90d"),
        create("internal-cron", "never"),
        create("legacy-partner", "30d"),
    )
    expires = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    assert (
        httpx.patch(f"{server.url}/v1/keys/{old}", headers=admin, json={"expires_at": expires}).status_code
        == 200
    )
    import time

    time.sleep(1.5)
    assert old in httpx.post(f"{server.url}/v1/keys/sweep", headers=admin).json()["expired"]

    sign_in(page, server)
    page.fill("#f-project", "colours")
    expect(page.locator("tr[data-key-id]")).to_have_count(4)
    colour = {
        key: page.locator(f"tr[data-key-id='{key}'] [data-expiry]").get_attribute("data-expiry")
        for key in (soon, later, never, old)
    }
    assert colour == {soon: "yellow", later: "green", never: "never", old: "expired"}
    page.screenshot(path=str(artifacts_dir / "dashboard-expiry.png"), full_page=True)

    page.check("#f-expiring")
    expect(page.locator("tr[data-key-id]")).to_have_count(1)
    expect(page.locator(f"tr[data-key-id='{soon}']")).to_be_visible()
    page.uncheck("#f-expiring")
    page.select_option("#f-status", "expired")
    expect(page.locator("tr[data-key-id]")).to_have_count(1)
    expect(page.locator(f"tr[data-key-id='{old}']")).to_be_visible()
