"""Attacker-style tests: a console app on a real EmbeddedPipeline (chDB + SQLite) per test module."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from keytrail.console.api import create_app
from keytrail.console.embedded import EmbeddedPipeline
from keytrail.keystore.store import KeyStore
from keytrail.settings import Settings
from tests.infra.ports import free_port


@dataclass
class Console:
    app: FastAPI
    client: TestClient
    pipeline: EmbeddedPipeline
    settings: Settings
    admin_key: str

    def new_key(self, project: str, *scopes: str, name: str = "test key", **options: Any) -> tuple[str, str]:
        """(key id, secret) of a fresh key made directly in the key store."""
        record, secret = self.pipeline.keystore.create_key(name, project, scopes=list(scopes), **options)
        return record.id, secret

    def flush(self) -> None:
        self.app.state.console.flush_usage()

    def all_rows_text(self) -> str:
        """Every row of every ClickHouse table of the store, as one text (to search for secrets)."""
        ch = self.pipeline.clickhouse
        tables = [r["name"] for r in ch.query("SELECT name FROM system.tables WHERE database = currentDatabase()")]
        assert "usage_events" in tables
        chunks = []
        for table in tables:
            columns = ch.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                               "AND table = {table:String} ORDER BY position", {"table": table})
            # Aggregate states (the live set rollups) are binary: read the values they hold.
            selected = ", ".join(
                f"finalizeAggregation(`{c['name']}`) AS `{c['name']}`" if c["type"].startswith("AggregateFunction")
                else f"`{c['name']}`" for c in columns) or "*"
            for row in ch.query(f"SELECT {selected} FROM `{table}`"):  # noqa: S608 - names from system tables
                chunks.append(f"{table}: {row!r}")
        return "\n".join(chunks)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@contextmanager
def running_console(data_dir, **settings: Any) -> Iterator[Console]:
    config = Settings(data_dir=data_dir, **settings)
    pipeline = EmbeddedPipeline(config)
    try:
        app = create_app(config, pipeline=pipeline, usage_flush_seconds=60)
        with TestClient(app) as client:
            yield Console(app, client, pipeline, config, app.state.bootstrap_admin_key)
    finally:
        pipeline.close()


@pytest.fixture(scope="module")
def console(tmp_path_factory) -> Iterator[Console]:
    with running_console(tmp_path_factory.mktemp("security")) as running:
        yield running


@dataclass
class Server:
    url: str
    admin_key: str
    data_dir: Path
    log: Path
    process: subprocess.Popen

    def client(self, secret: str | None = None, **options: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **options)


@contextmanager
def serve_process(data_dir: Path, env: dict[str, str] | None = None, wait_ready: bool = True) -> Iterator[Server]:
    """A real `keytrail serve` in a subprocess on its own data dir; stopped even when the test fails."""
    port = free_port()
    environment = {
        **os.environ,
        "KEYTRAIL_DATA_DIR": str(data_dir),
        "KEYTRAIL_API_URL": f"http://127.0.0.1:{port}",
        **(env or {}),
    }
    for name in ("KEYTRAIL_CLICKHOUSE_URL", "KEYTRAIL_KEYSTORE_URL"):
        if name not in (env or {}):
            environment.pop(name, None)
    log_path = data_dir.parent / f"{data_dir.name}-serve.log"
    keytrail = Path(sys.executable).parent / "keytrail"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(keytrail), "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir.parent,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while wait_ready:
                if process.poll() is not None:
                    raise RuntimeError(f"keytrail serve exited early:\n{log_path.read_text()}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"keytrail serve did not answer in 60 s:\n{log_path.read_text()}")
                time.sleep(0.2)
            admin_file = data_dir / "admin.key"
            admin_key = admin_file.read_text().strip() if admin_file.exists() else ""
            yield Server(url=url, admin_key=admin_key, data_dir=data_dir, log=log_path, process=process)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


@pytest.fixture
def store(tmp_path) -> Iterator[KeyStore]:
    """A fresh SQLite key store for middleware tests."""
    with KeyStore.open(f"sqlite:///{tmp_path / 'keys.db'}", b"security-test-secret-0123456789") as opened:
        yield opened
