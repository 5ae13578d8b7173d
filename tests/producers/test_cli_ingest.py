"""`keytrail produce` and `keytrail ingest`: every line validated, valid ones delivered, rejected
ones written with reasons, counts reported."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
import pytest
import typer
from typer.testing import CliRunner

from keytrail.console.cli_ingest import ingest, produce
from tests.factories import usage_event
from tests.infra.ports import free_port
from tests.producers.conftest import read_topic
from tests.producers.fake_console import FakeConsole

SECRET = "kt_live_AbCdEfGhIjKlMnOpQrStUvWxYz012345_1a2B3c"


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(produce)
    app.command()(ingest)
    return app


def _write_file(path, good: int):
    lines = [
        usage_event(f"key_cli{n % 3}", seconds=n, request_id=str(n)).model_dump_json().encode()
        for n in range(good)
    ]
    bad = {
        3: b'{"event_id": "not json',
        7: orjson.dumps({**orjson.loads(lines[0]), "key_id": SECRET}),
        9: orjson.dumps({**orjson.loads(lines[0]), "surprise": 1}),
    }
    out = []
    for index, line in enumerate(lines):
        out.append(bad.get(index + 1, line))
        if index == 4:
            out.append(b"")  # blank lines are skipped
    path.write_bytes(b"\n".join(out) + b"\n")
    return good - len(bad)


def _rejects(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.integration
def test_produce_sends_valid_lines_to_kafka_and_writes_rejects(kafka_bootstrap, usage_topic, tmp_path):
    events = tmp_path / "gateway.jsonl"
    valid = _write_file(events, 40)
    result = CliRunner().invoke(
        _cli(), ["produce", str(events), "--bootstrap", kafka_bootstrap, "--topic", usage_topic]
    )
    assert result.exit_code == 1, result.output  # some lines were rejected
    rejects = _rejects(tmp_path / "gateway.rejects.jsonl")
    assert [(r["line"], r["code"]) for r in rejects] == [
        (3, "bad_json"),
        (8, "schema_violation"),
        (10, "schema_violation"),
    ]
    assert (
        "secret" in rejects[1]["reason"]
        and SECRET not in (tmp_path / "gateway.rejects.jsonl").read_text()
    )
    messages = read_topic(kafka_bootstrap, usage_topic)
    assert len(messages) == valid
    assert all(m.key() == orjson.loads(m.value())["key_id"].encode() for m in messages)


def test_produce_to_an_unreachable_broker_is_one_clear_error(tmp_path):
    events = tmp_path / "e.jsonl"
    _write_file(events, 5)
    result = CliRunner().invoke(_cli(), ["produce", str(events), "--bootstrap", f"127.0.0.1:{free_port()}"])
    assert result.exit_code == 2
    assert "cannot reach Kafka" in result.output


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def test_ingest_goes_through_a_running_console_with_the_ingest_key(tmp_path, monkeypatch):
    console = FakeConsole(ingest_key="kt_test_ingest")
    console.app.get("/healthz")(lambda: {"status": "ok"})
    port = free_port()
    server = make_server("127.0.0.1", port, console.app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        events = tmp_path / "e.jsonl"
        valid = _write_file(events, 20)
        rejects = tmp_path / "out" / "bad.jsonl"
        monkeypatch.setenv("KEYTRAIL_INGEST_KEY", "kt_test_ingest")
        result = CliRunner().invoke(
            _cli(),
            ["ingest", str(events), "--api-url", f"http://127.0.0.1:{port}", "--rejects", str(rejects)],
        )
    finally:
        server.shutdown()
    assert result.exit_code == 1, result.output
    assert len(console.events) == valid
    assert [r["line"] for r in _rejects(rejects)] == [3, 8, 10]
    assert "accepted" in result.output and str(valid) in result.output


def test_ingest_without_a_console_runs_the_embedded_pipeline(tmp_path):
    events = tmp_path / "e.jsonl"
    valid = _write_file(events, 30)
    env = {
        **os.environ,
        "KEYTRAIL_DATA_DIR": str(tmp_path / "data"),
        "KEYTRAIL_API_URL": f"http://127.0.0.1:{free_port()}",
        "COLUMNS": "200",
    }
    script = "import typer; from keytrail.console.cli_ingest import ingest; typer.run(ingest)"
    done = subprocess.run(
        [sys.executable, "-c", script, str(events)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "embedded store" in done.stderr
    assert f"│ {valid} " in done.stderr or f" {valid} " in done.stderr
    assert len(_rejects(tmp_path / "e.rejects.jsonl")) == 3
