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
    alerts = console.client.get("/v1/alerts", headers=bearer(console.admin_key)).text
    responses.append(alerts)
    metrics = console.client.get("/metrics").text
    responses.append(metrics)
    assert f"keytrail_events_redacted_total {float(len(planted))}" in metrics  # counted, each event once
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
    assert "secret_exposed" in alerts  # severity high: on-call hears of it


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


def test_error_messages_never_echo_a_secret_sent_as_a_key_id_or_scope(console):
    secret = planted_secrets()["aws_access_key"]
    admin = bearer(console.admin_key)
    for path in (f"/v1/keys/{secret}", f"/v1/keys/x{secret}.", f"/v1/keys/{secret}/usage"):
        answer = console.client.get(path, headers=admin)
        assert answer.status_code == 404 and secret not in answer.text, (path, answer.text)
    _, ingest = console.new_key("scoped", "ingest")
    verdict = console.client.post("/v1/verify", headers=bearer(ingest), json={"key": ingest, "scope": f"x{secret}"})
    assert verdict.status_code == 200 and verdict.json()["outcome"] == "denied"
    assert secret not in verdict.text


def test_keytrail_ingest_direct_stores_no_secret_and_its_rejects_file_holds_none(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    secret = planted_secrets()["github_token"]
    lines = [_event("key_cliDirect0000000001", "cli", user_agent=f"bot {secret}"),
             _event(f"x{secret}", "cli")]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    data_dir = tmp_path / "data"
    keytrail = Path(sys.executable).parent / "keytrail"
    env = {**os.environ, "KEYTRAIL_DATA_DIR": str(data_dir), "KEYTRAIL_API_URL": "http://127.0.0.1:9"}
    done = subprocess.run([str(keytrail), "ingest", "--direct", str(source)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # one line rejected
    assert secret not in done.stdout + done.stderr
    rejects = (tmp_path / "events.rejects.jsonl").read_text()
    assert "key_id" in rejects and secret not in rejects
    read = (  # in a process of its own: chDB serves one data directory per process
        "import json, sys; from keytrail.sql.backends import open_clickhouse; "
        "b = open_clickhouse('chdb://' + sys.argv[1]); "
        "print(json.dumps([r['user_agent'] for r in b.query('SELECT user_agent FROM usage_events')])); b.close()"
    )
    stored = subprocess.run([sys.executable, "-c", read, str(data_dir / "chdb")], capture_output=True, text=True,
                            timeout=120, check=True).stdout
    assert json.loads(stored.strip().splitlines()[-1]) == ["bot [REDACTED:github_token]"]


def test_a_secret_pasted_into_a_key_record_or_a_reason_is_refused_or_redacted(console):
    secret = planted_secrets()["google_api_key"]
    admin = bearer(console.admin_key)
    for field, value in [("name", f"prod {secret}"), ("owner", secret), ("scopes", [f"x{secret}"])]:
        answer = console.client.post("/v1/keys", headers=admin,
                                     json={"name": "ok", "project_id": "records", field: value})
        assert answer.status_code == 400, (field, answer.text)
        assert answer.json()["error"]["code"] == "invalid_request" and secret not in answer.text
    created = console.client.post("/v1/keys", headers=admin, json={"name": "ok", "project_id": "records"}).json()
    key_id = created["key"]["id"]
    revoked = console.client.post(f"/v1/keys/{key_id}/revoke", headers=admin,
                                  json={"reason": f"leaked: {secret}"})
    assert revoked.status_code == 200, revoked.text
    history = console.client.get(f"/v1/keys/{key_id}/events", headers=admin)
    assert secret not in revoked.text + history.text
    assert "[REDACTED:google_api_key]" in history.text
    assert secret not in console.all_rows_text()
