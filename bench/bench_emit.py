"""emit() cost on the request path, and producer throughput, for the Kafka transport.

    .venv/bin/python bench/bench_emit.py                          # starts a local Kafka broker
    .venv/bin/python bench/bench_emit.py --bootstrap 127.0.0.1:9092 --events 300000

Cases (all with the fields a middleware passes: a dict with occurred_at, latency, bytes, ...):

- encode: `UsageEncoder.encode()` alone (contract JSON from the dict, checks included).
- emit, broker up: `KafkaEmitter.emit()` with the default producer settings (idempotent, acks=all,
  lz4, linger 10 ms), serialisation included; every call timed on its own (perf_counter_ns).
  "CPU µs/call" is this thread's CPU time per call (thread_time), which stays meaningful on a
  machine shared with other work, where wall-clock percentiles include time spent descheduled.
- emit, broker down: the same while the broker is stopped (or unreachable with `--bootstrap`):
  every event goes to the on-disk spool.
- throughput: emit as fast as one thread can, then flush until the broker acknowledged every
  event. "events/s" is wall time from the first emit to the last ack; "events per CPU-second" is
  the process's CPU time (this thread, the poller and librdkafka's threads), i.e. per core.

Prints markdown tables. Targets (DESIGN.md): emit() <= 5 us p50, <= 50 us p99; never blocks
while the broker is down.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import libversion  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from keytrail.producers.encoding import UsageEncoder  # noqa: E402
from keytrail.producers.kafka_emitter import KafkaEmitter  # noqa: E402

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


def row(case: str, measured: tuple[list[int], float], baseline_cpu: float, extra: str = "") -> str:
    samples, cpu = measured
    quantiles = statistics.quantiles(samples, n=100)
    return (
        f"| {case} | {len(samples):,} | {quantiles[49] / 1000:.2f} | {quantiles[98] / 1000:.2f} | "
        f"{statistics.fmean(samples) / 1000:.2f} | {cpu - baseline_cpu:.2f} | {extra} |"
    )


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="an existing broker (default: start one from tests/infra)")
    parser.add_argument("--events", type=int, default=200_000, help="timed emit() calls per case")
    parser.add_argument("--throughput-events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=8)
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
    rows: list[str] = []
    throughput: list[str] = []
    gc.collect()
    gc.freeze()
    try:
        baseline = min(fields_cpu_us(options.events // 4) for _ in range(3))
        encoder = UsageEncoder()
        timed_calls(encoder.encode, 20_000)  # warm the caches
        rows.append(
            row("encode (dict -> contract JSON)", timed_calls(encoder.encode, options.events), baseline)
        )

        # librdkafka's produce() alone, on pre-encoded bytes, with the emitter's producer settings.
        from confluent_kafka import Producer

        from keytrail.producers.kafka_emitter import producer_config

        raw = Producer({**producer_config(bootstrap), "on_delivery": lambda error, message: None})
        encoded = [encoder.encode(request_fields(n)) for n in range(options.events)]
        samples, cpu0 = [], time.thread_time_ns()
        for key, value in encoded:
            started = time.perf_counter_ns()
            raw.produce(topic, value, key)
            samples.append(time.perf_counter_ns() - started)
            if len(samples) % 1000 == 0:
                raw.poll(0)
        rows.append(
            row(
                "produce() alone (pre-encoded bytes)",
                (samples, (time.thread_time_ns() - cpu0) / len(samples) / 1000),
                0.0,
            )
        )
        raw.flush(120)
        del encoded

        emitter = KafkaEmitter(bootstrap, topic=topic, spool_dir=workdir / "spool-up")
        timed_calls(emitter.emit, 20_000)
        emitter.flush(60)
        measured = timed_calls(emitter.emit, options.events)
        pending = emitter.flush(120)
        counters = emitter.counters
        rows.append(
            row("emit(), broker up", measured, baseline, f"spooled {counters.spooled}, pending {pending}")
        )

        # Throughput: one thread emits flat out, then waits for every ack.
        before = emitter.counters.delivered
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for n in range(options.throughput_events):
            emitter.emit(request_fields(n))
        emit_wall = time.perf_counter() - wall0
        left = emitter.flush(300)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        delivered = emitter.counters.delivered - before
        throughput.append(
            f"| {options.throughput_events:,} | {options.throughput_events / emit_wall:,.0f} | "
            f"{delivered / wall:,.0f} | {delivered / cpu:,.0f} | {left} | {emitter.counters.spooled} |"
        )
        emitter.close()

        # Broker down: every event goes to the spool.
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
        counters = down.counters
        rows.append(
            row(
                f"emit(), {how} (spooling)",
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
    print("| case | calls | p50 µs | p99 µs | mean µs | CPU µs/call | notes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    print(
        "\n| events | emit() calls/s (one thread) | delivered events/s (emit + all acks) | events per CPU-second | not acked | spooled |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    print("\n".join(throughput))


if __name__ == "__main__":
    main()
