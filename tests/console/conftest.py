"""A console app on a real EmbeddedPipeline (chDB + SQLite) in a fresh data dir per test module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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

    def new_key(self, project: str, *scopes: str, name: str = "test key", **options) -> tuple[str, str]:
        """(key id, secret) of a fresh key made directly in the key store."""
        record, secret = self.pipeline.keystore.create_key(name, project, scopes=list(scopes), **options)
        return record.id, secret

    def flush(self) -> None:
        """Push the console's own queued usage events through the pipeline now."""
        self.app.state.console.flush_usage()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def console(tmp_path_factory) -> Iterator[Console]:
    """chDB allows one data dir per process: one pipeline per module, closed at its end."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("console"))
    pipeline = EmbeddedPipeline(settings)
    try:
        app = create_app(settings, pipeline=pipeline, usage_flush_seconds=60)
        with TestClient(app) as client:
            yield Console(app, client, pipeline, settings, app.state.bootstrap_admin_key)
    finally:
        pipeline.close()
