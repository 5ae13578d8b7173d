"""Outages of the stores while the stream runs: nothing is lost, nothing is counted twice (events
from single records and from envelopes alike)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from keytrail.keystore.store import KeyStore
from keytrail.schemas.batch_codec import decode_batch
from keytrail.schemas.codec import encode_usage_event
from keytrail.schemas.envelope import encode_envelope
from keytrail.sql.backends import ClickHouseBackend, ClickHouseUnavailable, open_clickhouse
from keytrail.sql.migrate import migrate
from keytrail.stream_processors.core.aggregate import UsageAggregator
from keytrail.stream_processors.projector import LastUsedProjector
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink
from keytrail.stream_processors.state_stores import InMemoryStates
from tests.factories import BASE_TIME, usage_event

SECRET = b"outage-test-secret-long-enough"


class UnreachableFor:
    """A real ClickHouse backend behind a switch: while it is off, every call fails as a network outage would."""

    def __init__(self, backend: ClickHouseBackend) -> None:
        self.backend = backend
        self.url = backend.url
        self.reachable = threading.Event()
        self.reachable.set()
        self.refused = 0

    def _gate(self) -> None:
        if not self.reachable.is_set():
            self.refused += 1
            raise ClickHouseUnavailable("connection refused (outage)")

    def command(self, sql, params=None):
        self._gate()
        return self.backend.command(sql, params)

    def query(self, sql, params=None):
        self._gate()
        return self.backend.query(sql, params)

    def insert_json_rows(self, table, payload):
        self._gate()
        return self.backend.insert_json_rows(table, payload)

    def close(self):
        self.backend.close()


def _as_kafka_batches(events: list, envelopes: bool) -> list[tuple[list, list | None]]:
    """Batches of 100 events: plain (no positions), or decoded from envelopes of 25 events on one
    partition with their offsets, as the worker gets them."""
    if not envelopes:
        return [(events[i : i + 100], None) for i in range(0, len(events), 100)]
    records = [(encode_envelope([encode_usage_event(e) for e in events[i : i + 25]]), 0, i // 25)
               for i in range(0, len(events), 25)]
    decoded = [decode_batch(records[i : i + 4]) for i in range(0, len(records), 4)]
    assert all(batch.envelopes == 4 and len(batch.events) == 100 for batch in decoded)
    return [(batch.events, batch.positions) for batch in decoded]


@pytest.mark.parametrize("envelopes", [False, True], ids=["events", "envelopes"])
def test_clickhouse_outage_pauses_the_sink_and_loses_nothing(chdb_path, envelopes):
    backend = open_clickhouse(f"chdb://{chdb_path}")
    migrate(backend)
    switch = UnreachableFor(backend)
    sink = ClickHouseSink(switch, max_backoff_s=0.2)
    core = UsageAggregator()
    states = InMemoryStates()
    events = [usage_event(f"key_{i % 5}", seconds=i) for i in range(600)]
    batches = _as_kafka_batches(events, envelopes)

    sink.write_batch(core.process(batches[0][0], states, batches[0][1]))
    switch.reachable.clear()
    reopen = threading.Timer(1.5, switch.reachable.set)
    reopen.start()
    started = time.monotonic()
    sink.write_batch(core.process(batches[1][0], states, batches[1][1]))  # blocks (backpressure) until back
    blocked_for = time.monotonic() - started
    for batch, positions in batches[2:]:
        sink.write_batch(core.process(batch, states, positions))
    redelivered = core.process(batches[1][0], states, batches[1][1])  # the batch redelivered after the outage
    assert not redelivered.accepted
    if envelopes:  # Kafka positions (the envelope's offset) recognise it at once; plain events meet closed minutes
        assert redelivered.duplicates == 100
    sink.write_batch(redelivered)

    assert switch.refused >= 2 and sink.retries >= 2
    assert blocked_for >= 1.0, "the sink returned while ClickHouse was unreachable"
    (row,) = backend.query("SELECT count() AS n, uniqExact(event_id) AS u FROM usage_events FINAL")
    assert (int(row["n"]), int(row["u"])) == (600, 600)
    (minutes,) = backend.query("SELECT sum(requests) AS r FROM key_usage_minute FINAL")
    assert int(minutes["r"]) == 600
    backend.close()


@pytest.mark.integration
def test_key_store_outage_is_retried_and_last_used_arrives_afterwards(postgres_service, postgres_url):
    if not getattr(postgres_service, "restartable", False):
        pytest.skip("the PostgreSQL in use is not a local process this test can stop and start")
    store = KeyStore.open(postgres_url, SECRET, engine_options={"pool_pre_ping": True})
    keys = [store.create_key(f"outage-{i}", "proj_outage")[0].id for i in range(3)]
    core = UsageAggregator()
    states = InMemoryStates()
    projector = LastUsedProjector(store, max_backoff_s=0.5)
    first = core.process([usage_event(k, seconds=10, project_id="proj_outage") for k in keys], states)
    projector.apply(first.last_used)

    postgres_service.stop()
    newer = core.process([usage_event(k, seconds=3600, client_ip="10.7.7.7", project_id="proj_outage")
                          for k in keys], states)
    # The projector retries in the background; the server comes back from this (main) thread, since a
    # server started by a thread that then exits is killed with it (PR_SET_PDEATHSIG follows the thread).
    applying = threading.Thread(target=projector.apply, args=(newer.last_used,))
    applying.start()
    time.sleep(2.0)
    assert applying.is_alive(), "apply returned while PostgreSQL was down"
    postgres_service.start()
    applying.join(60)
    assert not applying.is_alive(), "apply did not finish after PostgreSQL came back"
    assert projector.retries >= 1
    for key in keys:
        record = store.get(key)
        assert record.last_used_at == BASE_TIME + timedelta(seconds=3600)
        assert record.last_used_ip == "10.7.7.7"
    store.close()
