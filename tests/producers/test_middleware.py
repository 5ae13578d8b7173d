"""The key-verifying middleware on real FastAPI and Flask apps: right status and outcome for every
kind of key, one valid usage event per request with the route template, and no secret anywhere."""

from __future__ import annotations

import asyncio
import logging

import httpx
import orjson
import pytest

from keytrail.producers.inprocess_emitter import InProcessEmitter
from keytrail.producers.verifiers import LocalKeyVerifier
from tests.producers.apps import PROJECT, SERVICE, fastapi_app, flask_app, make_keyring

ROUTE = {"fastapi": "/v1/orders/{order_id}", "flask": "/v1/orders/<order_id>"}


class Harness:
    """One protected app, its captured events, and a way to call it."""

    def __init__(self, framework: str, keyring, **options) -> None:
        self.framework = framework
        self.keyring = keyring
        self.events: list = []
        self.emitter = InProcessEmitter(self.events.extend, background=False, strict=True)
        settings = {
            "verifier": LocalKeyVerifier(keyring.store),
            "emitter": self.emitter,
            "service": SERVICE,
            "project_id": "proj_service",
            "public_paths": ["/healthz"],
            **options,
        }
        if framework == "fastapi":
            self.app = fastapi_app(**settings)
        else:
            app = flask_app(**settings)
            self.client = app.test_client()
            self.client.environ_base["REMOTE_ADDR"] = "203.0.113.7"

    def call(self, method: str, path: str, *, headers: dict | None = None, peer: str | None = None, **kwargs):
        if self.framework == "flask":
            environ = {"REMOTE_ADDR": peer} if peer else {}
            if "content" in kwargs:
                kwargs["data"] = kwargs.pop("content")
            response = self.client.open(
                path, method=method, headers=headers or {}, environ_base=environ, **kwargs
            )
            response.close()
            status, body = response.status_code, response.get_data()
        else:
            response = asyncio.run(
                self._asgi_call(method, path, headers or {}, peer or "203.0.113.7", kwargs)
            )
            status, body = response.status_code, response.content
        assert self.emitter.flush(5) == 0
        return status, body

    async def _asgi_call(
        self, method: str, path: str, headers: dict, peer: str, kwargs: dict
    ) -> httpx.Response:
        transport = httpx.ASGITransport(self.app, raise_app_exceptions=False, client=(peer, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, path, headers=headers, **kwargs)

    def only_event(self):
        assert len(self.events) == 1, self.events
        return self.events.pop()


@pytest.fixture(scope="module")
def keyring(tmp_path_factory):
    ring = make_keyring(f"sqlite:///{tmp_path_factory.mktemp('keys') / 'keys.db'}")
    yield ring
    ring.store.close()


@pytest.fixture(params=["fastapi", "flask"])
def harness(request, keyring):
    return Harness(request.param, keyring)


def test_valid_key_gets_200_and_one_event_with_the_route_template(harness, keyring):
    status, body = harness.call(
        "GET",
        "/v1/orders/A-1001?expand=items",
        headers={
            "Authorization": f"Bearer {keyring.secrets['valid']}",
            "User-Agent": "billing/2.0",
            "X-Request-ID": "req-77",
        },
    )
    assert status == 200
    assert orjson.loads(body) == {"order": "A-1001", "caller": keyring.ids["valid"]}
    event = harness.only_event()
    assert event.route == ROUTE[harness.framework]
    assert (event.method, event.status, event.outcome.value) == ("GET", 200, "ok")
    assert (event.key_id, event.project_id, event.service) == (keyring.ids["valid"], PROJECT, SERVICE)
    assert (event.client_ip, event.user_agent, event.request_id) == ("203.0.113.7", "billing/2.0", "req-77")
    assert event.response_bytes == len(body) and event.latency_ms > 0


def test_x_api_key_header_works_and_request_bytes_are_counted(harness, keyring):
    status, _ = harness.call(
        "POST", "/v1/orders", headers={"X-API-Key": keyring.secrets["valid"]}, content=b"x" * 321
    )
    assert status == 200
    event = harness.only_event()
    assert (event.route, event.method, event.request_bytes) == ("/v1/orders", "POST", 321)
    assert event.request_id, "a request id is generated when the client sends none"


@pytest.mark.parametrize(
    ("key", "status", "code", "outcome", "key_id"),
    [
        (None, 401, "missing_key", "invalid", "anonymous"),
        ("kt_live_not-a-key", 401, "invalid_key", "invalid", "unknown"),
        ("unknown", 401, "invalid_key", "invalid", "unknown"),
        ("revoked", 403, "key_revoked", "revoked", "revoked"),
        ("expired", 403, "key_expired", "expired", "expired"),
        ("disabled", 403, "key_disabled", "disabled", "disabled"),
    ],
)
def test_refused_keys_get_the_right_status_error_and_event(
    harness, keyring, key, status, code, outcome, key_id
):
    secret = keyring.secrets.get(key, key)
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    got_status, body = harness.call("GET", "/v1/orders/A-1", headers=headers)
    assert got_status == status
    error = orjson.loads(body)["error"]
    assert error["code"] == code and error["message"]
    event = harness.only_event()
    assert event.outcome.value == outcome and event.status == status
    assert event.key_id == keyring.ids.get(key_id, key_id)
    assert event.project_id == (PROJECT if key_id in keyring.ids else "proj_service")
    assert event.route == ROUTE[harness.framework], "refused requests are recorded with the template too"


def test_a_key_without_the_required_scope_is_denied(keyring):
    for framework in ("fastapi", "flask"):
        harness = Harness(framework, keyring, scope="orders:write")
        status, body = harness.call(
            "GET", "/v1/orders/A-1", headers={"X-API-Key": keyring.secrets["readonly"]}
        )
        assert status == 403 and orjson.loads(body)["error"]["code"] == "access_denied"
        event = harness.only_event()
        assert (event.outcome.value, event.key_id) == ("denied", keyring.ids["readonly"])


def test_the_secret_appears_in_no_event_and_no_log_line(harness, keyring, caplog):
    caplog.set_level(logging.DEBUG)
    secrets = [keyring.secrets[name] for name in ("valid", "revoked", "expired", "disabled", "unknown")]
    for secret in secrets:
        for headers in (
            {"Authorization": f"Bearer {secret}"},
            {"X-API-Key": secret},
            {"X-API-Key": secret, "User-Agent": f"leaky/{secret}", "X-Request-ID": secret},
        ):
            harness.call("GET", "/v1/orders/A-1", headers=headers)
    assert len(harness.events) == 15
    recorded = b"\n".join(event.model_dump_json().encode() for event in harness.events)
    logged = caplog.text + "\n".join(str(record.__dict__) for record in caplog.records)
    assert any(r.name == "keytrail.producers.middleware" for r in caplog.records), "the middleware logs its decisions"
    for secret in secrets:
        assert secret.encode() not in recorded
        assert secret not in logged
        body = secret.rsplit("_", 2)[1]
        assert body not in logged and body.encode() not in recorded, "not even the random part"


def test_forwarded_for_is_honoured_only_from_trusted_proxies(keyring):
    for framework in ("fastapi", "flask"):
        harness = Harness(framework, keyring, trusted_proxies=["10.0.0.0/8"])
        headers = {"X-API-Key": keyring.secrets["valid"], "X-Forwarded-For": "198.51.100.23, 10.0.0.2"}
        harness.call("GET", "/v1/orders/A-1", headers=headers, peer="10.0.0.1")
        assert harness.only_event().client_ip == "198.51.100.23"
        harness.call("GET", "/v1/orders/A-1", headers=headers, peer="192.0.2.50")
        assert harness.only_event().client_ip == "192.0.2.50", "an untrusted peer cannot choose its address"


def test_query_string_keys_only_when_enabled(keyring):
    for framework in ("fastapi", "flask"):
        path = f"/v1/orders/A-1?api_key={keyring.secrets['valid']}"
        assert Harness(framework, keyring).call("GET", path)[0] == 401
        enabled = Harness(framework, keyring, allow_query_key=True)
        assert enabled.call("GET", path)[0] == 200
        assert enabled.only_event().route == ROUTE[framework]


def test_public_paths_need_no_key_and_emit_nothing(harness):
    assert harness.call("GET", "/healthz")[0] == 200
    assert harness.events == []


def test_rate_limited_and_failing_handlers_are_recorded(harness, keyring):
    headers = {"X-API-Key": keyring.secrets["valid"]}
    assert harness.call("GET", "/v1/limited", headers=headers)[0] == 429
    assert harness.only_event().outcome.value == "rate_limited"
    assert harness.call("GET", "/v1/boom", headers=headers)[0] == 500
    event = harness.only_event()
    assert (event.status, event.route) == (500, "/v1/boom")
    assert event.outcome.value in ("error", "ok")  # Flask turns the exception into a 500 itself


def test_unknown_routes_are_recorded_as_unmatched_never_as_raw_paths(harness, keyring):
    status, _ = harness.call("GET", "/v1/nothing/here/12345", headers={"X-API-Key": keyring.secrets["valid"]})
    assert status == 404
    assert harness.only_event().route == "<unmatched>"
    harness.call("GET", "/v1/nothing/here/12345")
    assert harness.only_event().route == "<unmatched>"


def test_remote_verification_follows_the_verify_contract_and_fails_closed(keyring, caplog):
    from keytrail.producers.verifiers import RemoteKeyVerifier
    from tests.producers.fake_console import FakeConsole

    caplog.set_level(logging.DEBUG)
    console = FakeConsole(keystore=keyring.store)
    for framework in ("fastapi", "flask"):
        verifier = RemoteKeyVerifier(
            "http://console.test",
            cache_ttl=60,
            transport=console.transport(),
            async_transport=console.async_transport(),
        )
        harness = Harness(framework, keyring, verifier=verifier, scope="orders:read")
        console.down = False
        console.requests.clear()
        assert (
            harness.call("GET", "/v1/orders/A-1", headers={"X-API-Key": keyring.secrets["valid"]})[0] == 200
        )
        assert harness.only_event().key_id == keyring.ids["valid"]
        assert console.requests == [{"verify": ["client_ip", "key", "scope"]}]
        assert (
            harness.call("GET", "/v1/orders/A-2", headers={"X-API-Key": keyring.secrets["valid"]})[0] == 200
        )
        assert len(console.requests) == 1, "the verdict is cached"
        harness.only_event()
        status, _ = harness.call("GET", "/v1/orders/A-1", headers={"X-API-Key": keyring.secrets["revoked"]})
        assert status == 403 and harness.only_event().outcome.value == "revoked"
        console.down = True
        status, body = harness.call(
            "GET", "/v1/orders/A-1", headers={"X-API-Key": keyring.secrets["expired"]}
        )
        assert status == 503 and orjson.loads(body)["error"]["code"] == "verification_unavailable"
        event = harness.only_event()
        assert (event.outcome.value, event.key_id) == ("error", "unknown")
    for name in ("valid", "revoked", "expired"):
        assert keyring.secrets[name] not in caplog.text


def test_a_verifier_that_breaks_fails_closed(keyring):
    class Broken:
        def verify(self, presented_key, scope=None, client_ip=None):
            raise RuntimeError(f"database exploded near {presented_key}")

    for framework in ("fastapi", "flask"):
        harness = Harness(framework, keyring, verifier=Broken())
        status, body = harness.call("GET", "/v1/orders/A-1", headers={"X-API-Key": keyring.secrets["valid"]})
        assert status == 503 and keyring.secrets["valid"].encode() not in body
        assert harness.only_event().outcome.value == "error"
