"""emit() cost on the request path, and producer throughput, for the Kafka transport (envelopes).

    .venv/bin/python bench/bench_emit.py                          # starts a local Kafka broker
    .venv/bin/python bench/bench_emit.py --bootstrap 127.0.0.1:9092 --events 300000
    .venv/bin/python bench/bench_emit.py --json                   # ends with one JSON object of figures

Cases (all with the fields a middleware passes: a dict with occurred_at, latency, bytes, ...),
measured one after the other in the same run so they can be compared on a noisy machine:

- encode: `UsageEncoder.encode()` alone (contract JSON from the dict, checks included): the
  floor of any emit().
- produce() alone: librdkafka's `produce()` of one pre-encoded event, the cost the single-event
  emitter used to pay in the request path (the same-run reference for a bare confluent produce).
- emit(), envelopes: `KafkaEmitter.emit()` with the defaults (envelopes of up to 500 events,
  50 ms linger, zstd), serialisation included; every call timed on its own (perf_counter_ns),
  while the sender thread packs and produces in the background. "CPU µs/call" is this thread's
  CPU time per call (thread_time), which stays meaningful on a machine shared with other work.
- emit(), single events: the same with `envelopes=False` (one record per event, lz4).
- emit(), broker down: envelopes while the broker is stopped (or unreachable with
  `--bootstrap`): every event goes to the on-disk spool, by the sender thread.
- throughput, per mode and compression: one thread emits flat out, then flushes until the broker
  acknowledged every event. "delivered events/s" is wall time from the first emit to the last
  ack; "events per CPU-second" uses the process's CPU time (all threads); "events/record" is the
  mean envelope size; "bytes/event" is what librdkafka sent to the broker (its `txbytes`
  statistic, produce requests after compression) per delivered event.

Targets (DESIGN.md): emit() <= 5 us p50, <= 50 us p99; never blocks while the broker is down.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import Producer, libversion  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from keytrail.producers.encoding import UsageEncoder  # noqa: E402
from keytrail.producers.kafka_emitter import KafkaEmitter, producer_config  # noqa: E402

KEYS = [f"key_bench{n:04d}" for n in range(500)]
ROUTES = ["/v1/orders", "/v1/orders/{order_id}", "/v1/customers/{customer_id}", "/v1/invoices", "/v1/search"]


def request_fields(n: int) -> dict:
    """What the middleware hands to emit() for one request."""
    return {
        "occurred_at": time.time(),
        "key_id": KEYS[n % len(KEYS)],
        "project_id": "proj_bench",
        "service": "orders-api",
        "method": "GET",
        "route": ROUTES[n % len(ROUTES)],
        "status": 200,
        "outcome": "ok",
        "latency_ms": (n % 5000) / 100,
        "request_bytes": 0,
        "response_bytes": 1200 + n % 300,
        "client_ip": f"10.20.{n % 7}.{n % 200}",
        "user_agent": "billing-svc/2.3 python-httpx/0.27",
        "request_id": f"req-{n}",
    }


def timed_calls(call, count: int) -> tuple[list[int], float]:  # type: ignore[no-untyped-def]
    """Nanoseconds of each call(fields) (fields built outside the timed region), and this thread's
    CPU time per call in µs (which, unlike wall time, does not grow when other processes take the
    CPU; it includes building the fields)."""
    samples = []
    clock = time.perf_counter_ns
    cpu0 = time.thread_time_ns()
    for n in range(count):
        fields = request_fields(n)
        started = clock()
        call(fields)
        samples.append(clock() - started)
    return samples, (time.thread_time_ns() - cpu0) / count / 1000


def fields_cpu_us(count: int) -> float:
    """CPU µs per iteration of the timing loop without the call (subtracted from the CPU column)."""
    return timed_calls(lambda fields: None, count)[1]


class Case:
    """One latency case: its row in the table and its figures in the JSON."""

    def __init__(
        self, name: str, label: str, measured: tuple[list[int], float], baseline_cpu: float, notes: str = ""
    ):
        samples, cpu = measured
        quantiles = statistics.quantiles(samples, n=1000)
        self.name, self.label, self.notes, self.calls = name, label, notes, len(samples)
        self.p50 = quantiles[499] / 1000
        self.p99 = quantiles[989] / 1000
        self.p999 = quantiles[998] / 1000
        self.mean = statistics.fmean(samples) / 1000
        self.cpu = cpu - baseline_cpu

    def row(self) -> str:
        return (
            f"| {self.label} | {self.calls:,} | {self.p50:.2f} | {self.p99:.2f} | {self.p999:.1f} | "
            f"{self.mean:.2f} | {self.cpu:.2f} | {self.notes} |"
        )

    def figures(self) -> dict[str, float]:
        return {
            f"{self.name}_p50_us": round(self.p50, 3),
            f"{self.name}_p99_us": round(self.p99, 3),
            f"{self.name}_p999_us": round(self.p999, 3),
            f"{self.name}_cpu_us": round(self.cpu, 3),
        }


class TxBytes:
    """librdkafka's `txbytes` (bytes sent to brokers), summed over brokers, from its statistics."""

    def __init__(self) -> None:
        self.latest = 0
        self.updates = 0
        self._lock = threading.Lock()

    def __call__(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        total = sum(broker.get("txbytes", 0) for broker in stats.get("brokers", {}).values())
        with self._lock:
            self.latest = total
            self.updates += 1

    def settle(self, timeout: float = 5.0) -> int:
        """The figure after at least two more statistics rounds (all sends included)."""
        start = self.updates
        deadline = time.monotonic() + timeout
        while self.updates < start + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.latest


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(60)


def throughput(
    bootstrap: str, topic: str, spool: Path, events: int, *, envelopes: bool, compression: str
) -> dict[str, Any]:
    """One thread emits `events` flat out, then flushes; the figures of the run."""
    tx = TxBytes()
    emitter = KafkaEmitter(
        bootstrap,
        topic=topic,
        spool_dir=spool,
        envelopes=envelopes,
        compression=compression,
        producer_overrides={"statistics.interval.ms": 200, "stats_cb": tx},
    )
    try:
        for n in range(2000):  # connection, metadata, caches
            emitter.emit(request_fields(n))
        emitter.flush(60)
        tx0 = tx.settle()
        records0, events0 = emitter.records
        delivered0 = emitter.counters.delivered
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for n in range(events):
            emitter.emit(request_fields(n))
        emit_wall = time.perf_counter() - wall0
        left = emitter.flush(300)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        counters = emitter.counters
        delivered = counters.delivered - delivered0
        records, in_records = emitter.records
        sent = tx.settle() - tx0
    finally:
        emitter.close()
    return {
        "mode": "envelopes" if envelopes else "single",
        "compression": compression,
        "events": events,
        "emit_calls_per_s": events / emit_wall,
        "delivered_eps": delivered / wall,
        "events_per_cpu_s": delivered / cpu,
        "events_per_record": (in_records - events0) / max(1, records - records0),
        "bytes_per_event": sent / max(1, delivered),
        "not_acked": left,
        "spooled": counters.spooled,
        "dropped": counters.dropped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="an existing broker (default: start one from tests/infra)")
    parser.add_argument("--events", type=int, default=200_000, help="timed emit() calls per case")
    parser.add_argument("--throughput-events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one final JSON object of the figures")
    options = parser.parse_args()

    broker = None
    bootstrap = options.bootstrap
    if bootstrap is None:
        from tests.infra.kafka import KafkaBroker

        broker = KafkaBroker(heap="1g")
        broker.__enter__()
        bootstrap = broker.bootstrap
    workdir = Path(tempfile.mkdtemp(prefix="keytrail-bench-emit-"))
    topic = f"keytrail.usage.v1.bench-{os.getpid()}"
    create_topic(bootstrap, topic, options.partitions)
    cases: list[Case] = []
    runs: list[dict[str, Any]] = []
    gc.collect()
    gc.freeze()
    try:
        baseline = min(fields_cpu_us(options.events // 4) for _ in range(3))
        encoder = UsageEncoder()
        timed_calls(encoder.encode, 20_000)  # warm the caches
        cases.append(
            Case(
                "encode",
                "encode (dict -> contract JSON)",
                timed_calls(encoder.encode, options.events),
                baseline,
            )
        )

        # librdkafka's produce() alone, on pre-encoded bytes, with the single-event producer settings.
        raw = Producer({**producer_config(bootstrap), "on_delivery": lambda error, message: None})
        encoded = [encoder.encode(request_fields(n)) for n in range(options.events)]
        samples, cpu0 = [], time.thread_time_ns()
        for key, value in encoded:
            started = time.perf_counter_ns()
            raw.produce(topic, value, key)
            samples.append(time.perf_counter_ns() - started)
            if len(samples) % 1000 == 0:
                raw.poll(0)
        cases.append(
            Case(
                "produce",
                "produce() alone (pre-encoded bytes)",
                (samples, (time.thread_time_ns() - cpu0) / len(samples) / 1000),
                0.0,
            )
        )
        raw.flush(120)
        del encoded, raw

        for name, label, envelopes in (
            ("emit_envelopes", "emit(), envelopes (default), broker up", True),
            ("emit_single", "emit(), single events, broker up", False),
        ):
            emitter = KafkaEmitter(
                bootstrap, topic=topic, spool_dir=workdir / f"spool-{name}", envelopes=envelopes
            )
            timed_calls(emitter.emit, 20_000)
            emitter.flush(60)
            measured = timed_calls(emitter.emit, options.events)
            pending = emitter.flush(120)
            counters = emitter.counters
            records, events = emitter.records
            cases.append(
                Case(
                    name,
                    label,
                    measured,
                    baseline,
                    f"{events / max(1, records):.0f} events/record, spooled {counters.spooled}, pending {pending}",
                )
            )
            emitter.close()

        for envelopes, compression in ((True, "zstd"), (True, "lz4"), (True, "none"), (False, "lz4")):
            runs.append(
                throughput(
                    bootstrap,
                    topic,
                    workdir / f"spool-tp-{envelopes}-{compression}",
                    options.throughput_events,
                    envelopes=envelopes,
                    compression=compression,
                )
            )

        # Broker down: every event goes to the on-disk spool.
        if broker is not None:
            down = KafkaEmitter(bootstrap, topic=topic, spool_dir=workdir / "spool-down")
            down.emit(request_fields(0))
            down.flush(30)
            broker.stop()
            how = "broker stopped"
        else:
            down = KafkaEmitter("127.0.0.1:9", topic=topic, spool_dir=workdir / "spool-down")
            how = "broker unreachable"
        deadline = time.monotonic() + 60
        while not down.spooling and time.monotonic() < deadline:
            time.sleep(0.05)
        measured = timed_calls(down.emit, options.events)
        deadline = time.monotonic() + 60
        while down.counters.spooled + down.counters.dropped < options.events and time.monotonic() < deadline:
            time.sleep(0.05)
        counters = down.counters
        cases.append(
            Case(
                "emit_down",
                f"emit(), envelopes, {how} (spooling)",
                measured,
                baseline,
                f"spooled {counters.spooled}, dropped {counters.dropped}",
            )
        )
        down.close(timeout=0)
    finally:
        gc.unfreeze()
        if broker is not None:
            broker.close()

    print(
        f"\nKafka emitter, {platform.python_implementation()} {platform.python_version()}, "
        f"librdkafka {libversion()[0]}, {os.cpu_count()} CPUs, {options.partitions} partitions\n"
    )
    print("| case | calls | p50 µs | p99 µs | p99.9 µs | mean µs | CPU µs/call | notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(case.row() for case in cases))
    print(
        "\n| records | compression | events | emit() calls/s (one thread) | delivered events/s "
        "(emit + all acks) | events per CPU-second | events/record | bytes/event to the broker | "
        "not acked | spooled | dropped |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(
            f"| {run['mode']} | {run['compression']} | {run['events']:,} | {run['emit_calls_per_s']:,.0f} | "
            f"{run['delivered_eps']:,.0f} | {run['events_per_cpu_s']:,.0f} | {run['events_per_record']:.1f} | "
            f"{run['bytes_per_event']:.1f} | {run['not_acked']} | {run['spooled']} | {run['dropped']} |"
        )
    if options.json:
        figures: dict[str, Any] = {
            "python": platform.python_version(),
            "librdkafka": libversion()[0],
            "cpus": os.cpu_count(),
            "partitions": options.partitions,
        }
        by_name = {case.name: case for case in cases}
        for case in cases:
            figures.update(case.figures())
        figures["emit_envelopes_p50_over_encode_p50"] = round(
            by_name["emit_envelopes"].p50 / by_name["encode"].p50, 3
        )
        figures["emit_envelopes_p50_over_single_p50"] = round(
            by_name["emit_envelopes"].p50 / by_name["emit_single"].p50, 3
        )
        figures["emit_envelopes_cpu_over_encode_plus_produce_cpu"] = round(
            by_name["emit_envelopes"].cpu / (by_name["encode"].cpu + by_name["produce"].cpu), 3
        )
        for run in runs:
            prefix = f"{run['mode']}_{run['compression']}"
            figures[f"{prefix}_delivered_eps"] = round(run["delivered_eps"])
            figures[f"{prefix}_events_per_cpu_s"] = round(run["events_per_cpu_s"])
            figures[f"{prefix}_events_per_record"] = round(run["events_per_record"], 1)
            figures[f"{prefix}_bytes_per_event"] = round(run["bytes_per_event"], 1)
            figures[f"{prefix}_lost"] = run["not_acked"] + run["dropped"]
        default = next(r for r in runs if r["mode"] == "envelopes" and r["compression"] == "zstd")
        single = next(r for r in runs if r["mode"] == "single")
        figures["delivered_eps"] = round(default["delivered_eps"])
        figures["mean_events_per_envelope"] = round(default["events_per_record"], 1)
        figures["envelopes_over_single_delivered_eps"] = round(
            default["delivered_eps"] / single["delivered_eps"], 2
        )
        print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
