"""Client addresses come from X-Forwarded-For / Forwarded only when the TCP peer is a configured
trusted proxy: a client outside a key's IP allowlist cannot get in by writing the header, neither at
the console (a real `keytrail serve`) nor behind the ASGI/WSGI middleware."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request
from flask import Flask

from keytrail.producers.asgi import KeyTrailMiddleware
from keytrail.producers.client_address import ClientAddressResolver
from keytrail.producers.inprocess_emitter import InProcessEmitter
from keytrail.producers.verifiers import LocalKeyVerifier
from keytrail.producers.wsgi import protect_flask
from tests.security.conftest import serve_process

ALLOWED = "198.51.100.0/24"
INSIDE = "198.51.100.7"


def _allowlisted_key(server) -> str:
    with server.client(server.admin_key) as admin:
        body = admin.post(
            "/v1/keys",
            json={"name": "office only", "project_id": "proxy-proj", "scopes": ["project:read"],
                  "ip_allowlist": [ALLOWED]},
        ).json()
    return body["secret"]


@pytest.mark.parametrize("header", [{"X-Forwarded-For": INSIDE}, {"Forwarded": f"for={INSIDE}"},
                                    {"X-Real-IP": INSIDE}])
def test_a_forged_forwarding_header_does_not_pass_the_console_allowlist(tmp_path, header):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with serve_process(data_dir) as server:
        secret = _allowlisted_key(server)
        with server.client(secret) as client:
            response = client.get("/v1/keys", headers=header)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "key_denied"


def test_the_console_believes_forwarding_headers_from_a_trusted_proxy(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with serve_process(data_dir, {"KEYTRAIL_TRUSTED_PROXIES": "127.0.0.1/32"}) as server:
        secret = _allowlisted_key(server)
        with server.client(secret) as client:
            assert client.get("/v1/keys", headers={"X-Forwarded-For": f"203.0.113.9, {INSIDE}"}).status_code == 200
            assert client.get("/v1/keys", headers={"Forwarded": f'for="{INSIDE}";proto=https'}).status_code == 200
            # the first untrusted hop from the right is the client: a forged left-most hop is not
            assert client.get("/v1/keys", headers={"X-Forwarded-For": f"{INSIDE}, 203.0.113.9"}).status_code == 403
            assert client.get("/v1/keys").status_code == 403  # the proxy itself is not in the allowlist


def test_the_resolver_walks_hops_only_from_trusted_peers():
    none_trusted = ClientAddressResolver(())
    assert none_trusted.resolve("127.0.0.1", INSIDE, f"for={INSIDE}") == "127.0.0.1"
    trusted = ClientAddressResolver(["10.0.0.0/8"])
    assert trusted.resolve("192.0.2.1", INSIDE) == "192.0.2.1"  # peer not trusted: header ignored
    assert trusted.resolve("10.1.1.1", f"{INSIDE}, 10.2.2.2") == INSIDE
    assert trusted.resolve("10.1.1.1", None, 'for="[2001:db8::1]:4711", for=10.2.2.2') == "2001:db8::1"
    assert trusted.resolve("10.1.1.1", None, "for=_hidden") == "10.1.1.1"



def _guarded_asgi(store, **options):
    app = FastAPI()

    @app.get("/orders")
    def orders(request: Request) -> dict:
        return {"ok": True}

    app.add_middleware(KeyTrailMiddleware, verifier=LocalKeyVerifier(store), emitter=InProcessEmitter(lambda e: None, background=False),
                       service="orders", **options)
    return app


async def _asgi_status(app, secret, headers):
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return (await client.get("/orders", headers={"Authorization": f"Bearer {secret}", **headers})).status_code


@pytest.mark.parametrize("trusted, expected", [((), 403), (["127.0.0.1"], 200)])
@pytest.mark.parametrize("header", [{"X-Forwarded-For": INSIDE}, {"Forwarded": f"for={INSIDE}"}])
def test_the_middlewares_believe_forwarding_headers_only_from_trusted_proxies(store, trusted, expected, header):
    import asyncio

    _, secret = store.create_key("office", "proj", scopes=["*"], ip_allowlist=[ALLOWED])
    app = _guarded_asgi(store, trusted_proxies=trusted)
    assert asyncio.run(_asgi_status(app, secret, header)) == expected

    flask_app = Flask("svc")
    flask_app.get("/orders")(lambda: {"ok": True})
    protect_flask(flask_app, verifier=LocalKeyVerifier(store), emitter=InProcessEmitter(lambda e: None, background=False),
                  service="orders", trusted_proxies=trusted)
    environ = {"REMOTE_ADDR": "127.0.0.1"}
    if "X-Forwarded-For" in header:
        environ["HTTP_X_FORWARDED_FOR"] = header["X-Forwarded-For"]
    else:
        environ["HTTP_FORWARDED"] = header["Forwarded"]
    response = flask_app.test_client().get("/orders", headers={"Authorization": f"Bearer {secret}"},
                                           environ_base=environ)
    assert response.status_code == expected

