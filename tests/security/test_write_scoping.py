"""Writes are scoped like reads, over real HTTP against a real `keytrail serve`: an ingest key of
project A cannot write usage of project B's keys (nor under B's project id); each such event is
refused with its index and reason (207 when some are, 422 when all are) and is never stored."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.security.conftest import serve_process

STRICT_PROJECT = "strict-proj"
REPORT: dict[str, int] = {"attempted": 0, "refused": 0}


def event(key_id: str, project: str, **overrides) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
        "key_id": key_id,
        "project_id": project,
        "service": "orders-api",
        "method": "GET",
        "route": "/v1/orders/{order_id}",
        "status": 200,
        "outcome": "ok",
        "client_ip": "203.0.113.7",
        **overrides,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("scoping") / "data"
    data_dir.mkdir()
    with serve_process(data_dir, {"KEYTRAIL_INGEST_EXISTING_KEYS_ONLY": STRICT_PROJECT}) as running:
        yield running


@pytest.fixture(scope="module")
def keys(server):
    """Keys made over HTTP with the bootstrap admin key: ingest keys and data keys of two projects."""
    made = {}
    with server.client(server.admin_key) as admin:
        for name, project, scopes in [
            ("ingest_a", "proj-a", ["ingest"]),
            ("ingest_b", "proj-b", ["ingest"]),
            ("reader_b", "proj-b", ["project:read"]),
            ("key_a", "proj-a", []),
            ("key_b", "proj-b", []),
            ("ingest_strict", STRICT_PROJECT, ["ingest"]),
            ("key_strict", STRICT_PROJECT, []),
        ]:
            response = admin.post("/v1/keys", json={"name": name, "project_id": project, "scopes": scopes})
            assert response.status_code in (200, 201), response.text
            body = response.json()
            made[name] = (body["key"]["id"], body["secret"])
    return made


def _post(server, secret, events):
    with server.client(secret) as client:
        return client.post("/v1/events", json={"events": events})


def test_an_ingest_key_of_project_a_cannot_write_usage_of_project_bs_key(server, keys):
    key_a, _ = keys["key_a"]
    key_b, _ = keys["key_b"]
    _, ingest_a = keys["ingest_a"]
    batch = [
        event(key_a, "proj-a"),  # fine
        event(key_b, "proj-a"),  # B's key smuggled under A's project id
        event(key_b, "proj-b"),  # B's key under B's project id
        event(key_a, "proj-b"),  # A's key under B's project id
    ]
    response = _post(server, ingest_a, batch)
    assert response.status_code == 207, response.text
    body = response.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (1, "key_not_in_project"),
        (2, "permission_denied"),
        (3, "permission_denied"),
    ]
    assert "proj-b" not in body["rejected"][0]["reason"]  # never tells A which project B's key is in
    REPORT["attempted"] += 3
    REPORT["refused"] += len(body["rejected"])


def test_a_batch_refused_entirely_answers_422_listing_every_event(server, keys):
    key_b, _ = keys["key_b"]
    _, ingest_a = keys["ingest_a"]
    response = _post(server, ingest_a, [event(key_b, "proj-a") for _ in range(5)])
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["accepted"] == 0
    assert [r["index"] for r in body["rejected"]] == [0, 1, 2, 3, 4]
    assert {r["code"] for r in body["rejected"]} == {"key_not_in_project"}
    REPORT["attempted"] += 5
    REPORT["refused"] += len(body["rejected"])


def test_even_an_admin_cannot_store_a_key_under_another_project(server, keys):
    key_a, _ = keys["key_a"]
    key_b, _ = keys["key_b"]
    response = _post(server, server.admin_key, [event(key_b, "proj-a"), event(key_a, "proj-a")])
    assert response.status_code == 207
    assert [(r["index"], r["code"]) for r in response.json()["rejected"]] == [(0, "key_not_in_project")]
    REPORT["attempted"] += 1
    REPORT["refused"] += 1


def test_a_project_taking_existing_keys_only_refuses_unknown_key_ids(server, keys):
    key_strict, _ = keys["key_strict"]
    _, ingest_strict = keys["ingest_strict"]
    batch = [
        event(key_strict, STRICT_PROJECT),
        event("key_madeUpByTheCaller0001", STRICT_PROJECT),
        event("anonymous", STRICT_PROJECT, status=401, outcome="invalid"),  # the middleware's placeholders
        event("unknown", STRICT_PROJECT, status=401, outcome="invalid"),
    ]
    response = _post(server, ingest_strict, batch)
    assert response.status_code == 207
    body = response.json()
    assert body["accepted"] == 3
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [(1, "unknown_key")]
    # a project without the setting still takes usage of key ids it has not created (gateways, backfills)
    _, ingest_a = keys["ingest_a"]
    assert _post(server, ingest_a, [event("key_fromTheGateway00001", "proj-a")]).status_code == 200


def test_nothing_refused_is_stored_or_raises_anything_on_project_bs_key(server, keys):
    key_b, _ = keys["key_b"]
    _, reader_b = keys["reader_b"]
    with server.client(reader_b) as reader:
        timeline = reader.get("/v1/usage/key_timeline", params={"key_id": key_b, "since": "30d"})
        assert timeline.status_code == 200, timeline.text
        assert timeline.json()["rows"] == []
        signals = reader.get("/v1/signals", params={"key_id": key_b})
        assert signals.status_code == 200 and signals.json()["rows"] == []
        alerts = reader.get("/v1/alerts")
        assert alerts.status_code == 200
        assert [a for a in alerts.json()["rows"] if a.get("key_id") == key_b] == []
        key = reader.get(f"/v1/keys/{key_b}").json()
        assert key["last_used_at"] is None
    print(f"\ncross-project writes attempted: {REPORT['attempted']}, refused: {REPORT['refused']}")
    assert REPORT["attempted"] == REPORT["refused"] == 9
