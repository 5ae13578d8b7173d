"""Attacker-style tests: a console app on a real EmbeddedPipeline (chDB + SQLite) per test module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from keytrail.console.api import create_app
from keytrail.console.embedded import EmbeddedPipeline
from keytrail.settings import Settings


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
            for row in ch.query(f"SELECT * FROM `{table}`"):  # noqa: S608 - names from system.tables
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
