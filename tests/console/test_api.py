"""The console HTTP API against a real embedded pipeline: every endpoint, scoping and error codes."""

from __future__ import annotations

import stat
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from keytrail.console.api import create_app
from keytrail.console.api.auth import ADMIN_KEY_FILE
from tests.console.conftest import bearer


def event(key_id: str, project: str, **overrides) -> dict:
    body = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        "key_id": key_id,
        "project_id": project,
        "service": "orders-api",
        "method": "GET",
        "route": "/v1/orders/{id}",
        "status": 200,
        "outcome": "ok",
        "client_ip": "198.51.100.7",
        "user_agent": "orders-client/1.0",
    }
    body.update(overrides)
    return body


# ------------------------------------------------------------------ ops and bootstrap


def test_healthz_and_openapi_need_no_key(console):
    assert console.client.get("/healthz").json()["status"] == "ok"
    spec = console.client.get("/openapi.json").json()
    assert "/v1/keys" in spec["paths"] and "/v1/events" in spec["paths"]
    assert console.client.get("/docs").status_code == 200


def test_dashboard_is_served_at_the_root(console):
    page = console.client.get("/")
    assert page.status_code == 200 and "KeyTrail" in page.text
    assert console.client.get("/static/chart.umd.min.js").text.startswith("/*!\n * Chart.js")


def test_bootstrap_admin_key_is_written_once_with_owner_only_permissions(console):
    path = console.settings.data_dir / ADMIN_KEY_FILE
    assert path.read_text().strip() == console.admin_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = create_app(console.settings, pipeline=console.pipeline)
    from fastapi.testclient import TestClient

    with TestClient(again):
        assert again.state.bootstrap_admin_key is None  # an admin key exists already
    assert path.read_text().strip() == console.admin_key


def test_metrics_expose_ingest_rejections_keys_and_requests(console):
    key_id, secret = console.new_key("metrics-proj", "ingest")
    console.client.post(
        "/v1/events", headers=bearer(secret), json={"events": [event(key_id, "metrics-proj"), {"nope": 1}]}
    )
    text = console.client.get("/metrics").text
    assert "keytrail_events_ingested_total" in text
    assert 'keytrail_events_rejected_total{code="schema_violation"}' in text
    assert 'keytrail_keys{status="active"}' in text
    assert 'keytrail_api_requests_total{method="POST",route="/v1/events",status="207"}' in text
    assert secret not in text


# ------------------------------------------------------------------ authentication


def test_requests_without_a_key_are_refused_with_a_stable_code(console):
    response = console.client.get("/v1/keys")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_a_wrong_key_is_refused_and_never_echoed(console):
    fake = "kt_live_" + "A" * 32 + "_abcd"
    response = console.client.get("/v1/keys", headers=bearer(fake))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_key"
    assert fake not in response.text


def test_a_key_without_an_api_scope_gets_insufficient_scope(console):
    _, secret = console.new_key("plain", "orders:read")
    response = console.client.get("/v1/keys", headers=bearer(secret))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


# ------------------------------------------------------------------ keys API


def test_create_returns_the_secret_once_and_reads_never_do(console):
    admin = bearer(console.admin_key)
    created = console.client.post(
        "/v1/keys",
        headers=admin,
        json={"name": "billing", "project_id": "shop", "scopes": ["project:read"], "expires_in": "30d"},
    )
    assert created.status_code == 201
    body = created.json()
    secret, key_id = body["secret"], body["key"]["id"]
    assert secret.startswith("kt_live_") and body["masked"].endswith(secret[-4:])
    shown = console.client.get(f"/v1/keys/{key_id}", headers=admin)
    assert shown.status_code == 200 and secret not in shown.text
    assert shown.json()["masked_key"] == body["masked"]
    assert secret not in console.client.get("/v1/keys", headers=admin).text


def test_list_filters_by_project_status_never_used_and_expiring(console):
    admin = bearer(console.admin_key)
    soon, _ = console.new_key("filters", name="soon", expires_in="1d")
    later, _ = console.new_key("filters", name="later", expires_in="90d")
    gone, _ = console.new_key("filters", name="gone")
    console.pipeline.keystore.revoke(gone)

    def ids(**params):
        response = console.client.get("/v1/keys", headers=admin, params={"project": "filters", **params})
        assert response.status_code == 200
        return [k["id"] for k in response.json()["keys"]]

    assert set(ids()) == {soon, later, gone}
    assert ids(status="revoked") == [gone]
    assert ids(expiring_days=7) == [soon]
    assert set(ids(never_used=True)) == {soon, later, gone}
    assert ids(idle_days=1) == []
    assert ids(sort="name", order="asc") == [gone, later, soon]
    assert console.client.get("/v1/keys", headers=admin, params={"sort": "bogus"}).status_code == 422


def test_lifecycle_patch_disable_enable_renew_rotate_revoke(console):
    admin = bearer(console.admin_key)
    key_id, _ = console.new_key("life", name="svc", expires_in="7d")
    patched = console.client.patch(
        f"/v1/keys/{key_id}", headers=admin, json={"name": "svc-2", "owner": "ops"}
    )
    assert patched.json()["name"] == "svc-2" and patched.json()["owner"] == "ops"
    assert console.client.post(f"/v1/keys/{key_id}/disable", headers=admin).json()["status"] == "disabled"
    assert console.client.post(f"/v1/keys/{key_id}/enable", headers=admin).json()["status"] == "active"
    before = datetime.fromisoformat(patched.json()["expires_at"].replace("Z", "+00:00"))
    renewed = console.client.post(f"/v1/keys/{key_id}/renew", headers=admin, json={"by": "30d"}).json()
    assert datetime.fromisoformat(renewed["expires_at"].replace("Z", "+00:00")) - before >= timedelta(days=29)
    rotated = console.client.post(f"/v1/keys/{key_id}/rotate", headers=admin, json={"grace": "1h"})
    assert rotated.status_code == 200
    successor = rotated.json()
    assert successor["secret"].startswith("kt_live_") and successor["key"]["rotated_from"] == key_id
    again = console.client.post(f"/v1/keys/{key_id}/rotate", headers=admin)
    assert again.status_code == 409 and again.json()["error"]["code"] == "key_already_rotated"
    assert console.client.post(f"/v1/keys/{key_id}/revoke", headers=admin).json()["status"] == "revoked"
    conflict = console.client.post(f"/v1/keys/{key_id}/revoke", headers=admin)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "key_state_conflict"
    events = console.client.get(f"/v1/keys/{key_id}/events", headers=admin).json()
    assert [e["action"] for e in events][:3] == ["created", "updated", "disabled"]


def test_unknown_keys_and_bad_requests_have_stable_codes(console):
    admin = bearer(console.admin_key)
    missing = console.client.get("/v1/keys/key_doesnotexist", headers=admin)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"
    bad = console.client.post(
        "/v1/keys", headers=admin, json={"name": "x", "project_id": "p", "expires_in": "soon"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
    empty = console.client.patch(f"/v1/keys/{console.new_key('p')[0]}", headers=admin, json={})
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "invalid_request"
    schema = console.client.post("/v1/keys", headers=admin, json={"name": "x"})
    assert schema.status_code == 422 and schema.json()["error"]["code"] == "invalid_request"


def test_sweep_expires_keys_past_their_expiry(console):
    admin = bearer(console.admin_key)
    key_id, _ = console.new_key("sweep", expires_in="1h")
    console.pipeline.keystore.update_key(key_id, expires_at=datetime.now(UTC) + timedelta(milliseconds=5))
    import time

    time.sleep(0.05)
    report = console.client.post("/v1/keys/sweep", headers=admin)
    assert report.status_code == 200 and key_id in report.json()["expired"]
    assert console.client.get(f"/v1/keys/{key_id}", headers=admin).json()["status"] == "expired"


# ------------------------------------------------------------------ project isolation


def test_a_project_key_cannot_see_or_change_another_projects_keys(console):
    mine, _ = console.new_key("proj-a", name="mine")
    theirs, _ = console.new_key("proj-b", name="theirs")
    _, writer = console.new_key("proj-a", "project:write", name="writer")
    h = bearer(writer)
    listed = console.client.get("/v1/keys", headers=h).json()["keys"]
    assert {k["project_id"] for k in listed} == {"proj-a"} and mine in {k["id"] for k in listed}
    assert console.client.get("/v1/keys", headers=h, params={"project": "proj-b"}).status_code == 403
    for method, path in [
        ("GET", f"/v1/keys/{theirs}"),
        ("PATCH", f"/v1/keys/{theirs}"),
        ("POST", f"/v1/keys/{theirs}/revoke"),
        ("POST", f"/v1/keys/{theirs}/rotate"),
        ("GET", f"/v1/keys/{theirs}/usage"),
        ("GET", f"/v1/keys/{theirs}/events"),
    ]:
        response = console.client.request(
            method, path, headers=h, json={"name": "x"} if method == "PATCH" else None
        )
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "key_not_found"
    assert console.client.get("/v1/usage/key_ips", headers=h, params={"key_id": theirs}).status_code == 404
    assert console.client.get("/v1/signals", headers=h, params={"key_id": theirs}).status_code == 404
    assert (
        console.client.get("/v1/usage/top_keys", headers=h, params={"project": "proj-b"}).status_code == 403
    )
    denied = console.client.post("/v1/keys", headers=h, json={"name": "x", "project_id": "proj-b"})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    escalate = console.client.post(
        "/v1/keys", headers=h, json={"name": "x", "project_id": "proj-a", "scopes": ["admin"]}
    )
    assert escalate.status_code == 403
    assert console.client.post(f"/v1/keys/{mine}/disable", headers=h).status_code == 200
    assert console.client.post("/v1/keys/sweep", headers=h).status_code == 403


def test_a_read_only_project_key_cannot_change_keys(console):
    mine, _ = console.new_key("proj-r", name="mine")
    _, reader = console.new_key("proj-r", "project:read", name="reader")
    h = bearer(reader)
    assert console.client.get(f"/v1/keys/{mine}", headers=h).status_code == 200
    refused = console.client.post(f"/v1/keys/{mine}/revoke", headers=h)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"


def test_project_usage_reads_are_confined_to_the_project(console):
    a, ingest_a = console.new_key("usage-a", "ingest", name="a")
    b, ingest_b = console.new_key("usage-b", "ingest", name="b")
    console.client.post("/v1/events", headers=bearer(ingest_a), json={"events": [event(a, "usage-a")]})
    console.client.post("/v1/events", headers=bearer(ingest_b), json={"events": [event(b, "usage-b")]})
    _, reader = console.new_key("usage-a", "project:read", name="reader")
    rows = console.client.get("/v1/usage/top_keys", headers=bearer(reader), params={"since": "1h"}).json()[
        "rows"
    ]
    assert a in {r["key_id"] for r in rows}
    assert b not in {r["key_id"] for r in rows}


# ------------------------------------------------------------------ ingest and verify


def test_ingest_accepts_the_valid_events_and_lists_the_rest(console):
    key_id, secret = console.new_key("ingest", "ingest")
    good = [event(key_id, "ingest") for _ in range(3)]
    batch = [
        good[0],
        {"event_id": "not-a-uuid"},
        good[1],
        event(key_id, "ingest", client_ip="nowhere"),
        good[2],
        42,
    ]
    response = console.client.post("/v1/events", headers=bearer(secret), json={"events": batch})
    assert response.status_code == 207  # some refused, each listed
    body = response.json()
    assert body["accepted"] == 3 and body["duplicates"] == 0
    assert [r["index"] for r in body["rejected"]] == [1, 3, 5]
    assert {r["code"] for r in body["rejected"]} == {"schema_violation"}
    assert "client_ip" in body["rejected"][1]["reason"]
    replay = console.client.post("/v1/events", headers=bearer(secret), json={"events": good})
    assert replay.json()["accepted"] == 0 and replay.json()["duplicates"] == 3


def test_ingest_refuses_other_projects_events_for_a_project_key(console):
    key_id, secret = console.new_key("ing-a", "ingest")
    response = console.client.post(
        "/v1/events",
        headers=bearer(secret),
        json={"events": [event(key_id, "ing-a"), event(key_id, "ing-b")]},
    )
    assert response.json()["accepted"] == 1
    assert response.json()["rejected"] == [
        {
            "index": 1,
            "code": "permission_denied",
            "reason": "this key may only report usage of project 'ing-a'",
        }
    ]


def test_ingest_rejects_more_than_5000_events_with_413(console):
    _, secret = console.new_key("big", "ingest")
    response = console.client.post("/v1/events", headers=bearer(secret), json={"events": [{}] * 5001})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "batch_too_large"


def test_ingest_needs_the_ingest_scope(console):
    _, reader = console.new_key("noingest", "project:read")
    assert console.client.post("/v1/events", headers=bearer(reader), json={"events": []}).status_code == 403


def test_verify_reports_the_outcome_and_never_echoes_the_key(console):
    _, verifier = console.new_key("verify", "ingest")
    key_id, secret = console.new_key("verify", "orders:read")
    h = bearer(verifier)
    ok = console.client.post(
        "/v1/verify", headers=h, json={"key": secret, "scope": "orders:read", "client_ip": "10.0.0.1"}
    )
    assert ok.json() == {"outcome": "ok", "key_id": key_id, "project_id": "verify", "reason": ""}
    assert secret not in ok.text
    denied = console.client.post(
        "/v1/verify", headers=h, json={"key": secret, "scope": "orders:write"}
    ).json()
    assert denied["outcome"] == "denied"
    malformed = console.client.post("/v1/verify", headers=h, json={"key": "kt_live_typo"}).json()
    assert malformed["outcome"] == "invalid" and malformed["key_id"] is None
    console.pipeline.keystore.revoke(key_id)
    assert console.client.post("/v1/verify", headers=h, json={"key": secret}).json()["outcome"] == "revoked"


def test_verify_does_not_reveal_keys_of_other_projects(console):
    _, verifier = console.new_key("verify-a", "ingest")
    _, other = console.new_key("verify-b")
    result = console.client.post("/v1/verify", headers=bearer(verifier), json={"key": other}).json()
    assert result == {"outcome": "invalid", "key_id": None, "project_id": None, "reason": "no such key"}


# ------------------------------------------------------------------ read API


def test_key_usage_series_counts_requests_errors_and_denials(console):
    key_id, secret = console.new_key("series", "ingest", "project:read")
    events = [
        event(key_id, "series"),
        event(key_id, "series", outcome="error", status=503),
        event(key_id, "series", outcome="denied", status=403),
    ]
    console.client.post("/v1/events", headers=bearer(secret), json={"events": events})
    for window, points in (("24h", 24), ("7d", 28), ("30d", 30)):
        series = console.client.get(
            f"/v1/keys/{key_id}/usage", headers=bearer(secret), params={"range": window}
        )
        assert series.status_code == 200
        body = series.json()
        assert len(body["points"]) == points
        assert (
            body["totals"]["requests"] >= 3
            and body["totals"]["errors"] >= 1
            and body["totals"]["denials"] >= 1
        )
    bad = console.client.get(f"/v1/keys/{key_id}/usage", headers=bearer(secret), params={"range": "1y"})
    assert bad.status_code == 422


def test_canned_queries_are_listed_and_run_with_checked_parameters(console):
    admin = bearer(console.admin_key)
    key_id, secret = console.new_key("canned", "ingest")
    console.client.post("/v1/events", headers=bearer(secret), json={"events": [event(key_id, "canned")]})
    names = {q["name"] for q in console.client.get("/v1/usage", headers=admin).json()["queries"]}
    assert {"key_ips", "key_routes", "top_keys"} <= names
    ips = console.client.get("/v1/usage/key_ips", headers=admin, params={"key_id": key_id}).json()["rows"]
    assert [r["ip"] for r in ips] == ["198.51.100.7"]
    routes = console.client.get("/v1/usage/key_routes", headers=admin, params={"key_id": key_id}).json()[
        "rows"
    ]
    assert routes[0]["route"] == "/v1/orders/{id}"
    unknown = console.client.get("/v1/usage/no_such_query", headers=admin)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_query"
    bad = console.client.get("/v1/usage/key_ips", headers=admin, params={"key_id": key_id, "limit": "lots"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_parameter"


def test_signals_and_alerts_are_listed(console):
    admin = bearer(console.admin_key)
    signals = console.client.get("/v1/signals", headers=admin, params={"since": "7d"})
    assert signals.status_code == 200 and isinstance(signals.json()["rows"], list)
    alerts = console.client.get("/v1/alerts", headers=admin, params={"status": "open"})
    assert alerts.status_code == 200 and alerts.json()["count"] == len(alerts.json()["rows"])
    bad = console.client.get("/v1/signals", headers=admin, params={"since": "last tuesday"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_parameter"


def test_the_consoles_own_requests_flow_through_the_pipeline(console):
    admin = bearer(console.admin_key)
    key_id, secret = console.new_key("self", "project:read")
    assert console.client.get(f"/v1/keys/{key_id}", headers=bearer(secret)).status_code == 200
    console.flush()
    record = console.client.get(f"/v1/keys/{key_id}", headers=admin).json()
    assert record["last_used_at"] is not None
    routes = console.client.get("/v1/usage/key_routes", headers=admin, params={"key_id": key_id}).json()[
        "rows"
    ]
    assert {(r["service"], r["route"]) for r in routes} == {("keytrail-console", "/v1/keys/{key_id}")}


def test_a_revoked_keys_attempts_are_recorded_as_revoked(console):
    admin = bearer(console.admin_key)
    key_id, secret = console.new_key("dead", "project:read")
    console.pipeline.keystore.revoke(key_id)
    refused = console.client.get("/v1/keys", headers=bearer(secret))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "key_revoked"
    console.flush()
    rows = console.client.get("/v1/usage/key_timeline", headers=admin, params={"key_id": key_id}).json()[
        "rows"
    ]
    assert [r["outcome"] for r in rows] == ["revoked"]


@pytest.mark.parametrize("path", ["/v1/keys", "/v1/signals", "/v1/alerts", "/v1/usage"])
def test_no_auth_mode_acts_as_a_local_admin(console, path):
    app = create_app(console.settings, pipeline=console.pipeline, no_auth=True)
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        assert client.get(path).status_code == 200
