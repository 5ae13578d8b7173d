"""Faults an operator meets, answered clearly, against a real `keytrail serve`: a key store locked by
another process (JSON 503 with a stable code and Retry-After within 2 s, /readyz says so, /healthz
stays live), a corrupt key store (one line at start), an oversized body (413 before it is read),
and private file modes whatever the umask."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.security.conftest import serve_process

HOLD_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("faults") / "data"
    data_dir.mkdir()
    with serve_process(data_dir, {"KEYTRAIL_MAX_REQUEST_BODY_BYTES": str(4 * 1024 * 1024)}) as running:
        yield running


def _event(key_id: str) -> dict:
    return {"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC).isoformat(), "key_id": key_id,
            "project_id": "keytrail", "service": "svc", "method": "GET", "route": "/x", "status": 200,
            "outcome": "ok", "client_ip": "192.0.2.1"}


def test_a_key_store_locked_by_another_process_answers_503_within_two_seconds(server):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(server.data_dir / "keys.db")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with server.client(server.admin_key) as admin:
            started = time.monotonic()
            response = admin.post("/v1/keys", json={"name": "during the lock", "project_id": "p1"})
            elapsed = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "keystore_busy"
            assert response.headers["retry-after"] == "1"
            assert elapsed <= 2.0 + 0.5, elapsed  # the bounded wait, plus a loaded machine's slack

            ready = admin.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["keystore"].startswith("busy")
            assert admin.get("/healthz").status_code == 200  # alive: only the key store is busy

            # reads and ingest keep answering (last_used_at waits for the lock)
            assert admin.get("/v1/keys").status_code == 200
            started = time.monotonic()
            ingest = admin.post("/v1/events", json={"events": [_event("key_duringTheLock000001")]})
            assert ingest.status_code == 200, ingest.text
            assert time.monotonic() - started <= 4.0
    finally:
        holder.stdin.close()
        holder.wait(10)
    with server.client(server.admin_key) as admin:
        assert admin.get("/readyz").json() == {
            "status": "ready", "mode": "embedded",
            "checks": {"keystore": "ok", "clickhouse": "ok", "kafka": "not used (embedded)"},
        }
        assert admin.post("/v1/keys", json={"name": "after the lock", "project_id": "p1"}).status_code in (200, 201)


def _raw_request(url: str, head: bytes, body_parts: list[bytes]) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:
                break
        sock.settimeout(10)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or len(answer) < 200:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
        return answer


def test_a_50_mb_body_is_refused_413_before_it_is_sent(server):
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.admin_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n"
    ).encode()
    answer = _raw_request(server.url, head, [b'{"events": ['])  # 50 MB announced, 12 bytes sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"payload_too_large" in answer and str(4 * 1024 * 1024).encode() in answer


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(server):
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.admin_key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b" " * (1024 * 1024)
    parts = [b'%x\r\n{"events":[\r\n' % len(b'{"events":[')] + [b"%x\r\n" % len(chunk) + chunk + b"\r\n"] * 6
    answer = _raw_request(server.url, head, parts)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]


def test_a_corrupt_key_store_is_one_line_at_start(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "keys.db").write_bytes(os.urandom(8192))
    keytrail = Path(sys.executable).parent / "keytrail"
    env = {**os.environ, "KEYTRAIL_DATA_DIR": str(data_dir)}
    env.pop("KEYTRAIL_KEYSTORE_URL", None)
    done = subprocess.run([str(keytrail), "serve", "--port", "1"], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "keys.db" in lines[0] and "not a readable SQLite key store" in lines[0]
    assert "Traceback" not in done.stderr


MAKE_STORE = """
import os, sys
os.umask(0)
from keytrail.console.embedded import EmbeddedPipeline
from keytrail.settings import Settings
pipeline = EmbeddedPipeline(Settings(data_dir=sys.argv[1]))
pipeline.keystore.create_key("k", "p")
pipeline.close()
"""


def test_key_store_and_data_directories_are_private_whatever_the_umask(tmp_path):
    data_dir = tmp_path / "fresh" / "data"
    subprocess.run([sys.executable, "-c", MAKE_STORE, str(data_dir)], check=True, timeout=120)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "chdb") == 0o700
    for name in ("keys.db", "keys.db-wal", "keys.db-shm"):
        if (data_dir / name).exists():
            assert mode(data_dir / name) == 0o600, name
    assert (data_dir / "keys.db").exists()
