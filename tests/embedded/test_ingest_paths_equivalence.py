"""`keytrail ingest --direct` of a file and of stdin, and `POST /v1/events`, give the rows the stream
worker gives for the same events (a client's retries included: re-sent events count once)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from keytrail.console.api import create_app
from keytrail.console.embedded import EmbeddedPipeline
from keytrail.schemas.codec import encode_usage_event
from keytrail.settings import Settings
from keytrail.sql.backends import open_clickhouse
from keytrail.sql.migrate import migrate
from tests.sinks.split_runs import WorkerBatches, cut, every_table, singles, stream, with_offsets

STREAM_TABLES = ("usage_events", "key_usage_minute", "key_last_used", "signals")
PREFIX = "key_paths"


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    """A file of events with a client's retries: 10 % of the events posted again, a little later."""
    events = stream(21, 1500, 6, prefix=PREFIX)
    rng = random.Random(22)
    out = [encode_usage_event(e) for e in events]
    for index in sorted(rng.sample(range(len(events)), 150), reverse=True):
        out.insert(min(index + rng.randint(1, 40), len(out)), out[index])
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, lines) -> dict:
    """The stream worker's batch body over the events once each, as single records."""
    events = stream(21, 1500, 6, prefix=PREFIX)
    backend = open_clickhouse(f"chdb://{tmp_path_factory.mktemp('reference') / 'chdb'}")
    try:
        migrate(backend)
        worker = WorkerBatches(backend)
        for batch in cut(with_offsets(singles(events)), random.Random(23), 700):
            worker.run(batch)
        assert worker.signals, "the stream raises signals, so they are compared"
        return every_table(backend, STREAM_TABLES)
    finally:
        backend.close()


def _ingest_direct(data: Path, source: Path, *, stdin: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEYTRAIL_DATA_DIR": str(data)}
    command = [sys.executable, "-m", "keytrail.console.cli", "ingest", "--direct"]
    if stdin:
        with source.open("rb") as handle:
            return subprocess.run([*command, "/dev/stdin"], stdin=handle, env=env, capture_output=True, timeout=600,
                                  check=False)
    return subprocess.run([*command, str(source)], env=env, capture_output=True, timeout=600, check=False)


def _tables_of(data: Path) -> dict:
    backend = open_clickhouse(f"chdb://{data / 'chdb'}")
    try:
        return every_table(backend, STREAM_TABLES, PREFIX)
    finally:
        backend.close()


@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
def test_ingest_direct_gives_the_rows_of_the_stream(tmp_path, lines, reference, stdin):
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    done = _ingest_direct(tmp_path / "data", source, stdin=stdin)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert _tables_of(tmp_path / "data") == reference


def test_http_ingest_gives_the_rows_of_the_stream(tmp_path, lines, reference):
    settings = Settings(data_dir=tmp_path / "console", _env_file=None)
    pipeline = EmbeddedPipeline(settings)
    try:
        app = create_app(settings, pipeline=pipeline, usage_flush_seconds=60)
        with TestClient(app) as client:
            headers = {"Authorization": f"Bearer {app.state.bootstrap_admin_key}"}
            counted = 0
            for batch in cut(lines, random.Random(24), 400):
                body = b'{"events":[' + b",".join(batch) + b"]}"
                response = client.post("/v1/events", content=body, headers={**headers, "content-type": "application/json"})
                assert response.status_code == 200, response.text
                result = orjson.loads(response.content)
                counted += result["accepted"] + result["late"] + result["duplicates"]
            assert counted == len(lines)
        assert every_table(pipeline.clickhouse, STREAM_TABLES, PREFIX) == reference
    finally:
        pipeline.close()
