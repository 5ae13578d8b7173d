"""HttpEmitter against the ingest contract, and InProcessEmitter: batching, counting, retries,
spooling while the console is down and in-order replay after."""

from __future__ import annotations

import logging

import pytest

from keytrail.producers.http_emitter import HttpEmitter
from keytrail.producers.inprocess_emitter import InProcessEmitter
from tests.producers.fake_console import FakeConsole

INGEST_KEY = "kt_live_ingestkeyingestkeyingestkey12_abc123"


def _fields(n: int, **changes) -> dict:
    return {
        "key_id": f"key_{n % 3}",
        "project_id": "proj_p",
        "service": "orders",
        "method": "GET",
        "route": "/v1/orders",
        "status": 200,
        "outcome": "ok",
        "client_ip": "10.0.0.1",
        "request_id": str(n),
        **changes,
    }


def _emitter(console: FakeConsole, tmp_path, **options) -> HttpEmitter:
    options = {
        "ingest_key": INGEST_KEY,
        "spool_dir": tmp_path / "spool",
        "background": False,
        "backoff": 0.01,
        "max_backoff": 0.05,
        "retries": 1,
        "transport": console.transport(),
        **options,
    }
    return HttpEmitter("http://console.test", **options)


def test_batches_follow_the_ingest_contract(tmp_path):
    console = FakeConsole(ingest_key=INGEST_KEY)
    emitter = _emitter(console, tmp_path, batch_size=40)
    for n in range(100):
        emitter.emit(_fields(n))
    assert emitter.flush(5) == 0
    assert [e.request_id for e in console.events] == [str(n) for n in range(100)]
    assert len(console.requests) == 3, "100 events in batches of 40"
    assert all(r["authorization"] == f"Bearer {INGEST_KEY}" for r in console.requests)
    assert emitter.counters.delivered == 100
    emitter.close()


def test_rejected_events_and_refused_requests_are_counted_as_failed_and_logged(tmp_path, caplog):
    console = FakeConsole(ingest_key=INGEST_KEY)
    emitter = _emitter(console, tmp_path)
    console.events.clear()
    emitter.emit(_fields(1))
    emitter.emit(_fields(1, event_id="5b7e0c4e-8a51-4a8e-9e53-2b1f3a1c0d9e"))
    emitter.emit(_fields(2, event_id="5b7e0c4e-8a51-4a8e-9e53-2b1f3a1c0d9e"))  # a duplicate: delivered
    assert emitter.flush(5) == 0
    assert emitter.counters.delivered == 3
    wrong_key = _emitter(FakeConsole(ingest_key="another"), tmp_path / "b")
    wrong_key.emit(_fields(3))
    assert wrong_key.flush(5) == 0
    assert (wrong_key.counters.failed, wrong_key.counters.delivered) == (1, 0)
    assert "401" in caplog.text and "an ingest key is required" in caplog.text
    assert INGEST_KEY not in caplog.text
    emitter.close()
    wrong_key.close()


def test_too_large_requests_are_split(tmp_path):
    console = FakeConsole(max_events=30)
    emitter = _emitter(console, tmp_path, batch_size=100)
    for n in range(100):
        emitter.emit(_fields(n))
    assert emitter.flush(5) == 0
    assert sorted(int(e.request_id) for e in console.events) == list(range(100))
    emitter.close()


def test_console_outage_spools_and_replays_in_order_exactly_once(tmp_path):
    console = FakeConsole()
    emitter = _emitter(console, tmp_path, batch_size=50)
    for n in range(100):
        emitter.emit(_fields(n))
    emitter.flush(5)
    console.down = True
    for n in range(100, 400):
        emitter.emit(_fields(n))
    emitter.flush(0.2)
    assert emitter.spooling and emitter.counters.spooled == 300
    for n in range(400, 500):  # behind the spool
        emitter.emit(_fields(n))
    console.down = False
    assert emitter.flush(10) == 0
    counters = emitter.counters
    assert (counters.delivered, counters.replayed, counters.dropped) == (500, 400, 0)
    assert [int(e.request_id) for e in console.events] == list(range(500))
    emitter.close()


def test_5xx_is_retried_then_spooled_and_close_keeps_the_spool_for_the_next_emitter(tmp_path):
    console = FakeConsole()
    console.fail_with = 503
    emitter = _emitter(console, tmp_path)
    for n in range(10):
        emitter.emit(_fields(n))
    emitter.close(timeout=0.3)
    assert emitter.counters.spooled == 10 and emitter.counters.delivered == 0
    console.fail_with = None
    successor = _emitter(console, tmp_path)
    assert successor.flush(5) == 0
    assert successor.counters.replayed == 10
    assert [int(e.request_id) for e in console.events] == list(range(10))
    successor.close()


def test_http_spool_bound_hit_is_counted_and_logged(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="keytrail.producers")
    console = FakeConsole()
    console.down = True
    emitter = _emitter(console, tmp_path, spool_max_bytes=3000)
    for n in range(50):
        emitter.emit(_fields(n))
    emitter.close(timeout=0.2)
    counters = emitter.counters
    assert counters.dropped > 0 and counters.spooled + counters.dropped == 50
    assert "DROPPED" in caplog.text


def test_in_process_emitter_hands_validated_events_to_the_sink():
    batches: list = []
    emitter = InProcessEmitter(batches.append, batch_size=10, background=False)
    for n in range(25):
        emitter.emit(_fields(n))
    assert emitter.flush() == 0
    assert [len(b) for b in batches] == [10, 10, 5]
    assert batches[0][0].request_id == "0" and batches[0][0].key_id == "key_0"
    assert emitter.counters.delivered == 25


def test_in_process_emitter_with_a_thread_delivers_in_the_background():
    received: list = []
    with InProcessEmitter(received.extend, flush_interval=0.01) as emitter:
        for n in range(5):
            emitter.emit(_fields(n))
        assert emitter.flush(5) == 0
    assert len(received) == 5


def test_in_process_sink_failures_are_retried_then_dropped_and_counted(caplog):
    calls = {"n": 0}

    def flaky(events) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise ConnectionError("pipeline busy")

    emitter = InProcessEmitter(flaky, background=False, retries=3, backoff=0.001)
    emitter.emit(_fields(1))
    assert emitter.flush(5) == 0
    assert emitter.counters.delivered == 1

    def broken(events) -> None:
        raise RuntimeError("always")

    failing = InProcessEmitter(broken, background=False, retries=1, backoff=0.001)
    failing.emit(_fields(1))
    failing.flush(5)
    assert failing.counters.dropped == 1
    assert "DROPPED" in caplog.text


def test_emit_after_close_is_counted_as_dropped():
    emitter = InProcessEmitter(lambda events: None, background=False)
    emitter.close()
    emitter.emit(_fields(1))
    assert emitter.counters.dropped == 1


@pytest.mark.parametrize("bad", [{"status": "200"}, {"key_id": INGEST_KEY}, {"extra": 1}])
def test_invalid_events_never_reach_the_transport(tmp_path, bad):
    console = FakeConsole()
    emitter = _emitter(console, tmp_path)
    emitter.emit(_fields(1, **bad))
    assert emitter.flush(1) == 0
    assert emitter.counters.invalid == 1 and console.requests == []
    emitter.close()
