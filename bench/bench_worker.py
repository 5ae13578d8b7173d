"""Stream worker throughput (Kafka -> worker -> ClickHouse) next to a naive one-event-at-a-time Faust agent.

Starts a throwaway Kafka broker (the test infrastructure's), loads N events, then runs
`keytrail worker` and, separately, bench/naive_faust_agent.py on the same broker, each with a
fresh consumer group and chDB directory, and reports events/s from the committed offsets.

    .venv/bin/python bench/bench_worker.py --events 300000 --keys 2000
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keytrail.schemas.codec import encode_usage_event  # noqa: E402
from keytrail.schemas.topics import Topics  # noqa: E402
from keytrail.stream_processors.topics_admin import ensure_topics  # noqa: E402
from tests.factories import usage_event  # noqa: E402
from tests.infra.kafka import KafkaBroker  # noqa: E402

PARTITIONS = 4


def load_events(bootstrap: str, events: int, keys: int, span_s: float = 7200.0) -> None:
    rng = random.Random(1)
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 50,
                         "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000,
                         "enable.idempotence": True})
    start = datetime.now(UTC) - timedelta(seconds=span_s)
    key_ids = [f"bench_{i:05d}" for i in range(keys)]
    for index in range(events):
        key = key_ids[min(int(rng.paretovariate(1.2)) - 1, keys - 1) if rng.random() < 0.5 else rng.randrange(keys)]
        event = usage_event(key, at=start, seconds=index * span_s / events, project_id="bench",
                            client_ip=f"10.{rng.randrange(8)}.{rng.randrange(4)}.{rng.randrange(1, 250)}",
                            event_id=uuid.UUID(int=rng.getrandbits(128), version=4))
        producer.produce(Topics.USAGE.value, key=key.encode(), value=encode_usage_event(event))
        if index % 20_000 == 0:
            producer.poll(0)
    producer.flush(120)


def committed(bootstrap: str, group: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        try:
            tps = consumer.committed([TopicPartition(Topics.USAGE.value, p) for p in range(PARTITIONS)], timeout=10)
        except KafkaException:  # coordinator not ready yet: nothing known to be committed
            return 0
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        consumer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(command: list[str], bootstrap: str, total: int, group: str, max_seconds: float) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="keytrail-bench-"))
    env = {**os.environ, "KEYTRAIL_KAFKA_BOOTSTRAP": bootstrap, "KEYTRAIL_CLICKHOUSE_URL": f"chdb://{workdir}/chdb",
           "KEYTRAIL_WORKER_APP_ID": group, "KEYTRAIL_USAGE_PARTITIONS": str(PARTITIONS),
           "KEYTRAIL_DATA_DIR": str(workdir), "KEYTRAIL_LOG_LEVEL": "INFO"}
    with open(workdir / "worker.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            first_at = first_count = first_cpu = None
            last_cpu = 0.0
            last_at, last_count, peak_rss = time.monotonic(), 0, 0.0
            deadline = time.monotonic() + max_seconds
            while time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.5)
                count = committed(bootstrap, group)
                now = time.monotonic()
                peak_rss = max(peak_rss, rss_mb(process.pid))
                cpu = cpu_seconds(process.pid)
                if count > 0 and first_at is None:
                    first_at, first_count, first_cpu = now, count, cpu
                last_at, last_count, last_cpu = now, count, cpu
                if count >= total:
                    break
        finally:
            process.terminate()
            process.wait(60)
    progress = [line for line in (workdir / "worker.log").read_text(errors="replace").splitlines()
                if "worker progress" in line]
    if progress:
        print(f"  last progress line: {progress[-1].split('worker progress: ')[1]}")
    if first_at is None or last_at == first_at:
        return {"events": last_count, "events_per_s": 0.0, "rss_mb": peak_rss, "cpu_share": 0.0}
    return {"events": last_count, "events_per_s": (last_count - first_count) / (last_at - first_at),
            "rss_mb": peak_rss, "seconds": last_at - first_at,
            "cpu_share": (last_cpu - first_cpu) / (last_at - first_at)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--naive-seconds", type=float, default=60.0)
    parser.add_argument("--span-seconds", type=float, default=7200.0,
                        help="event-time span of the loaded events (small = a dense live stream)")
    args = parser.parse_args()
    with KafkaBroker(heap="1g") as broker:
        ensure_topics(broker.bootstrap, PARTITIONS)
        started = time.monotonic()
        load_events(broker.bootstrap, args.events, args.keys, args.span_seconds)
        print(f"loaded {args.events:,} events in {time.monotonic() - started:.1f} s", flush=True)
        batched = run([sys.executable, "-m", "keytrail.console.cli", "worker"], broker.bootstrap, args.events,
                      "bench-batched", 900)
        noop = run([sys.executable, "bench/faust_noop_agent.py", "worker", "-l", "warn"], broker.bootstrap,
                   args.events, "bench-noop", 900)
        naive = run([sys.executable, "bench/naive_faust_agent.py", "worker", "-l", "warn"], broker.bootstrap,
                    args.events, "bench-naive", args.naive_seconds)
    ratio = batched["events_per_s"] / naive["events_per_s"] if naive["events_per_s"] else float("inf")
    print(f"\n{datetime.now(UTC):%Y-%m-%d} on {platform.node()} ({os.cpu_count()} cores), "
          f"{args.events:,} events, {args.keys:,} keys over {args.span_seconds:,.0f} s of event time, "
          f"{PARTITIONS} partitions, chDB sink\n")
    print("| agent | events counted | events/s | CPU cores busy | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for label, row in (("keytrail worker (take batches)", batched), ("Faust no-op agent (ceiling)", noop),
                       ("naive one-at-a-time agent", naive)):
        print(f"| {label} | {row['events']:,} | {row['events_per_s']:,.0f} | {row['cpu_share']:.2f} | {row['rss_mb']:.0f} |")
    print(f"\nspeed-up: {ratio:.1f}x")


if __name__ == "__main__":
    main()
