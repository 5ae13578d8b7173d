"""The scan scheduler (thread, asyncio, Faust timer) and signal consumption from Kafka."""

from __future__ import annotations

import asyncio
import threading
import time

from confluent_kafka import Producer

from keytrail.schemas.signals import Signal
from keytrail.stream_processors.alerting.consume import consume_signals
from keytrail.stream_processors.alerting.engine import AlertEngine
from keytrail.stream_processors.alerting.schedule import PeriodicScan, register_faust_timer, run_periodically
from keytrail.stream_processors.alerting.store import InMemoryAlertStore, InMemoryDeliveryLog
from tests.alerting.builders import NOW, engine_on, revoked_use_signal, webhook_rules
from tests.alerting.receiver import http_receiver


def test_periodic_scan_runs_until_stopped_and_survives_a_failing_scan():
    calls: list[int] = []
    ran_twice = threading.Event()

    def job() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("ClickHouse is down")
        ran_twice.set()

    with PeriodicScan(job, interval_s=0.01) as scan:
        assert ran_twice.wait(5)
    runs = scan.runs
    time.sleep(0.05)
    assert scan.runs == runs >= 2


def test_asyncio_scan_loop_stops_on_the_event():
    async def main() -> int:
        stop = asyncio.Event()
        calls: list[int] = []
        task = asyncio.create_task(run_periodically(lambda: calls.append(1), 0.01, stop=stop))
        while len(calls) < 3:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)
        return len(calls)

    assert asyncio.run(main()) >= 3


def test_faust_timer_is_registered_on_the_leader_and_scans():
    import faust

    scans: list[int] = []

    class Scanner:
        def scan(self) -> None:
            scans.append(1)

    registered: list[tuple[float, bool]] = []

    class RecordingApp:
        def timer(self, interval, on_leader=False, name=None):  # noqa: ANN001
            registered.append((interval, on_leader))
            return lambda fun: fun

    timer = register_faust_timer(RecordingApp(), Scanner(), 300.0)
    assert registered == [(300.0, True)]
    asyncio.run(timer())
    assert scans == [1]
    # and a real Faust app accepts the registration
    register_faust_timer(
        faust.App("keytrail-alerting-test", broker="memory://", store="memory://"), Scanner(), 60
    )


def _produce(bootstrap: str, topic: str, signals: list[Signal]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for signal in signals:
        producer.produce(topic, key=signal.key_id.encode(), value=signal.model_dump_json().encode())
    assert producer.flush(30) == 0


def test_signals_from_kafka_open_one_alert_and_a_second_consumer_run_does_not_renotify(
    kafka_bootstrap, unique
):
    topic = f"keytrail.signals.v1.{unique}"
    signal = revoked_use_signal(f"key_{unique}")
    _produce(kafka_bootstrap, topic, [signal, signal])
    store, deliveries = InMemoryAlertStore(), InMemoryDeliveryLog()
    with http_receiver() as receiver:
        engine = engine_on(store, deliveries, webhook_rules(receiver.url))
        deadline = time.monotonic() + 60
        consume_signals(
            engine,
            kafka_bootstrap,
            group_id=f"alerting-{unique}",
            topic=topic,
            poll_seconds=0.2,
            should_stop=lambda: bool(store.list()) or time.monotonic() > deadline,
        )
        # same group again: offsets were committed, so nothing comes back; nothing is resent
        stop_at = time.monotonic() + 3
        consume_signals(
            engine,
            kafka_bootstrap,
            group_id=f"alerting-{unique}",
            topic=topic,
            poll_seconds=0.2,
            should_stop=lambda: time.monotonic() > stop_at,
        )
        engine.close()
    (alert,) = store.list()
    assert alert.key_id == f"key_{unique}" and alert.evidence["ips"] == ["203.0.113.7"]
    assert len(receiver.requests) == 1


def test_engine_without_dispatcher_just_keeps_state():
    engine = AlertEngine(InMemoryAlertStore(), clock=lambda: NOW)
    assert engine.start() == []
    assert len(engine.handle_signals([revoked_use_signal()]).opened) == 1
