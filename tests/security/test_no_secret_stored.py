"""Secrets planted in every string field of usage events, through HTTP ingest and through the
headers of the console's own requests, are found in no ClickHouse table and in no API response;
each leak raises a `secret_exposed` signal naming the key and the field."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from keytrail.console.api.models import MAX_INGEST_BATCH  # noqa: F401 - the route under test
from tests.security.conftest import bearer
from tests.security.test_secret_scanner import planted_secrets

FIELDS = ["user_agent", "route", "request_id", "service"]
LIMITS = {"user_agent": 512, "route": 512, "request_id": 128, "service": 128}


def _event(key_id: str, project: str, **overrides) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": (datetime.now(UTC) - timedelta(seconds=30)).isoformat(),
        "key_id": key_id,
        "project_id": project,
        "service": "orders-api",
        "method": "GET",
        "route": "/v1/orders/{order_id}",
        "status": 200,
        "outcome": "ok",
        "client_ip": "198.51.100.4",
        **overrides,
    }


def test_no_planted_secret_is_found_in_any_table_or_response(console):
    key_id, ingest = console.new_key("leaky", "ingest", "project:read")
    planted: list[str] = []
    events = []
    for secret in planted_secrets().values():
        for field in FIELDS:
            value = f"x{secret}."[: LIMITS[field]]
            if field == "route":
                value = f"/v1/orders/{secret}/items"[:512]
            planted.append(secret)
            events.append(_event(key_id, "leaky", **{field: value}))
    response = console.client.post("/v1/events", headers=bearer(ingest), json={"events": events})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events)  # counted, not dropped

    # the console's own usage events come from request headers
    header_secret = planted_secrets()["aws_access_key"]
    planted.append(header_secret)
    console.client.get(
        "/v1/signals",
        headers={**bearer(ingest), "User-Agent": f"curl {header_secret}", "X-Request-Id": header_secret},
    )
    console.flush()

    responses = [response.text]
    for name in ("key_timeline", "key_user_agents", "key_routes", "key_ips", "key_audit"):
        answer = console.client.get(f"/v1/usage/{name}", headers=bearer(ingest),
                                    params={"key_id": key_id, "since": "1d"})
        assert answer.status_code == 200, (name, answer.text)
        responses.append(answer.text)
    responses.append(console.client.get("/v1/usage/top_keys", headers=bearer(ingest), params={"since": "1d"}).text)
    signals = console.client.get("/v1/signals", headers=bearer(ingest), params={"key_id": key_id})
    responses.append(signals.text)
    responses.append(console.client.get("/v1/alerts", headers=bearer(console.admin_key)).text)
    responses.append(console.client.get("/metrics").text)
    responses.append(console.client.get("/", headers=bearer(ingest)).text)

    stored = console.all_rows_text()
    assert "[REDACTED:" in stored
    found = [s for s in planted if s in stored or any(s in r for r in responses)]
    print(f"\nsecrets planted: {len(planted)}, found in tables or responses: {len(found)}")
    assert found == []

    exposed = [s for s in signals.json()["rows"] if s["kind"] == "secret_exposed"]
    assert exposed, signals.json()
    evidence = [json.loads(s["evidence"]) if isinstance(s["evidence"], str) else s["evidence"] for s in exposed]
    named = {field for e in evidence for field in e["fields"]}
    assert named == set(FIELDS)
    assert all(s["key_id"] == key_id for s in exposed)


def test_a_secret_shaped_key_id_in_any_decoration_is_refused_and_never_served(console):
    _, ingest = console.new_key("decorated", "ingest", "project:read")
    secret = planted_secrets()["keytrail_key"]
    decorated = [f"{secret}.", f"x{secret}", f"a:{secret}", secret]
    response = console.client.post(
        "/v1/events", headers=bearer(ingest), json={"events": [_event(k, "decorated") for k in decorated]}
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert [r["code"] for r in body["rejected"]] == ["schema_violation"] * 4
    assert secret not in response.text
    top = console.client.get("/v1/usage/top_keys", headers=bearer(ingest), params={"since": "1d"})
    assert secret not in top.text
    assert secret not in console.all_rows_text()
