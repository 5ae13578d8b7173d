"""Stream worker throughput (Kafka -> worker -> chDB), envelopes and single events, beside Faust's own ceiling.

Starts a throwaway Kafka broker (the test infrastructure's). Phase 1 loads N events as
single-event records and runs, each with a fresh consumer group and chDB directory: the
worker, the Faust no-op agent (bench/faust_noop_agent.py: takes batches, does nothing) and the
naive one-event-at-a-time agent. Phase 2 recreates the topic, loads the same N events as
UsageEnvelopes (events grouped per partition by the SDK's murmur2, up to 500 per record) and runs
the worker again. Events/s come from the committed offsets, turned into events with the number
of events each loaded offset carries. Ratios are to the no-op agent of the same run.

    .venv/bin/python bench/bench_worker.py --events 150000 --keys 2000 --json
    .venv/bin/python bench/bench_worker.py --events 150000 --keys 2000 --span-seconds 120 --json
"""

from __future__ import annotations

import argparse
import bisect
import json
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
from confluent_kafka.admin import AdminClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keytrail.schemas.codec import encode_usage_event  # noqa: E402
from keytrail.schemas.envelope import MAX_ENVELOPE_EVENTS, encode_envelope, envelope_headers  # noqa: E402
from keytrail.schemas.partitioning import partition_for  # noqa: E402
from keytrail.schemas.topics import Topics  # noqa: E402
from keytrail.stream_processors.topics_admin import ensure_topics  # noqa: E402
from tests.factories import usage_event  # noqa: E402
from tests.infra.kafka import KafkaBroker  # noqa: E402

PARTITIONS = 4


class Ledger:
    """How many events the loaded offsets of each partition carry (prefix sums)."""

    def __init__(self) -> None:
        self.offsets: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        self.weights: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}

    def delivered(self, partition: int, offset: int, weight: int) -> None:
        self.offsets[partition].append(offset)
        self.weights[partition].append(weight)

    def finish(self) -> None:
        for p in range(PARTITIONS):
            pairs = sorted(zip(self.offsets[p], self.weights[p], strict=True))
            self.offsets[p] = [o for o, _ in pairs]
            running, sums = 0, []
            for _, w in pairs:
                running += w
                sums.append(running)
            self.weights[p] = sums

    def events_below(self, partition: int, committed_offset: int) -> int:
        """Events carried by offsets < committed_offset."""
        i = bisect.bisect_left(self.offsets[partition], committed_offset)
        return self.weights[partition][i - 1] if i else 0

    @property
    def records(self) -> int:
        return sum(len(v) for v in self.offsets.values())


def generate(events: int, keys: int, span_s: float) -> list[tuple[str, bytes]]:
    rng = random.Random(1)
    start = datetime.now(UTC) - timedelta(seconds=span_s)
    key_ids = [f"bench_{i:05d}" for i in range(keys)]
    out = []
    for index in range(events):
        key = key_ids[min(int(rng.paretovariate(1.2)) - 1, keys - 1) if rng.random() < 0.5 else rng.randrange(keys)]
        event = usage_event(key, at=start, seconds=index * span_s / events, project_id="bench",
                            client_ip=f"10.{rng.randrange(8)}.{rng.randrange(4)}.{rng.randrange(1, 250)}",
                            event_id=uuid.UUID(int=rng.getrandbits(128), version=4))
        out.append((key, encode_usage_event(event)))
    return out


def load_events(bootstrap: str, encoded: list[tuple[str, bytes]], envelopes: bool) -> Ledger:
    ledger = Ledger()
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 50,
                         "compression.type": "zstd" if envelopes else "lz4",
                         "queue.buffering.max.messages": 1_000_000, "enable.idempotence": True,
                         "message.max.bytes": 2_000_000})

    def report(weight: int):
        def delivered(error, message) -> None:
            if error is not None:
                raise SystemExit(f"load failed: {error}")
            ledger.delivered(message.partition(), message.offset(), weight)
        return delivered

    if not envelopes:
        for index, (key, value) in enumerate(encoded):
            producer.produce(Topics.USAGE.value, key=key.encode(), value=value, on_delivery=report(1))
            if index % 20_000 == 0:
                producer.poll(0)
    else:
        pending: dict[int, list[tuple[str, bytes]]] = {p: [] for p in range(PARTITIONS)}

        def send(partition: int) -> None:
            items = pending[partition]
            producer.produce(Topics.USAGE.value, key=items[0][0].encode(), value=encode_envelope([v for _, v in items]),
                             partition=partition, headers=envelope_headers(len(items)), on_delivery=report(len(items)))
            pending[partition] = []
            producer.poll(0)

        for key, value in encoded:
            partition = partition_for(key, PARTITIONS)
            pending[partition].append((key, value))
            if len(pending[partition]) >= MAX_ENVELOPE_EVENTS:
                send(partition)
        for partition in range(PARTITIONS):
            if pending[partition]:
                send(partition)
    producer.flush(120)
    ledger.finish()
    return ledger


def committed(bootstrap: str, group: str, ledger: Ledger) -> int:
    """Events counted so far by `group`: its committed offsets, weighed by the ledger."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        try:
            tps = consumer.committed([TopicPartition(Topics.USAGE.value, p) for p in range(PARTITIONS)], timeout=10)
        except KafkaException:  # coordinator not ready yet: nothing known to be committed
            return 0
        return sum(ledger.events_below(tp.partition, tp.offset) for tp in tps if tp.offset > 0)
    finally:
        consumer.close()


def recreate_topic(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics([Topics.USAGE.value], operation_timeout=30).values():
        future.result()
    for _ in range(60):
        if Topics.USAGE.value not in admin.list_topics(timeout=10).topics:
            break
        time.sleep(0.5)
    ensure_topics(bootstrap, PARTITIONS)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(command: list[str], bootstrap: str, total: int, group: str, max_seconds: float, ledger: Ledger) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="keytrail-bench-"))
    env = {**os.environ, "KEYTRAIL_KAFKA_BOOTSTRAP": bootstrap, "KEYTRAIL_CLICKHOUSE_URL": f"chdb://{workdir}/chdb",
           "KEYTRAIL_WORKER_APP_ID": group, "KEYTRAIL_USAGE_PARTITIONS": str(PARTITIONS),
           "KEYTRAIL_DATA_DIR": str(workdir), "KEYTRAIL_LOG_LEVEL": "INFO"}
    with open(workdir / "worker.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            first_at = first_count = first_cpu = None
            samples = 0
            last_cpu = 0.0
            last_at, last_count, peak_rss = time.monotonic(), 0, 0.0
            deadline = time.monotonic() + max_seconds
            while time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.5)
                count = committed(bootstrap, group, ledger)
                now = time.monotonic()
                peak_rss = max(peak_rss, rss_mb(process.pid))
                cpu = cpu_seconds(process.pid)
                if count > 0 and first_at is None:
                    first_at, first_count, first_cpu = now, count, cpu
                if count > last_count and first_at is not None and now > first_at:
                    samples += 1
                last_at, last_count, last_cpu = now, count, cpu
                if count >= total:
                    break
        finally:
            process.terminate()
            process.wait(60)
    progress = [line for line in (workdir / "worker.log").read_text(errors="replace").splitlines()
                if "worker progress" in line]
    last_progress = progress[-1].split("worker progress: ")[1] if progress else ""
    if last_progress:
        print(f"  last progress line: {last_progress}")
    if first_at is None or last_at == first_at or samples < 3:
        print(f"  too fast to measure: {last_count:,} events counted within {samples} commit samples; "
              "load more events (--envelope-events)", flush=True)
        return {"events": last_count, "events_per_s": 0.0, "rss_mb": peak_rss, "cpu_share": 0.0, "progress": last_progress}
    eps = (last_count - first_count) / (last_at - first_at)
    cpu_share = (last_cpu - first_cpu) / (last_at - first_at)
    return {"events": last_count, "events_per_s": eps, "rss_mb": peak_rss, "seconds": last_at - first_at,
            "cpu_share": cpu_share, "cpu_us_per_event": cpu_share / eps * 1e6 if eps else 0.0,
            "progress": last_progress}


def _mean_batch(progress: str) -> float:
    for part in progress.split():
        if part.startswith("mean_batch="):
            return float(part.split("=")[1])
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--naive-seconds", type=float, default=60.0)
    parser.add_argument("--span-seconds", type=float, default=7200.0,
                        help="event-time span of the loaded events (small = a dense live stream)")
    parser.add_argument("--skip-single", action="store_true", help="only the envelope phase (1M-event runs)")
    parser.add_argument("--envelope-events", type=int, default=None,
                        help="events for the envelope phase (default: max(--events, 1,000,000), at the same "
                             "events per key-minute: the span grows with the count). At 100k events/s, 150k "
                             "events are done before the worker's first commit, so a rate cannot be measured")
    parser.add_argument("--json", action="store_true", help="print one final JSON object of the figures")
    args = parser.parse_args()
    worker = [sys.executable, "-m", "keytrail.console.cli", "worker"]
    rows: dict[str, dict] = {}
    encoded = generate(args.events, args.keys, args.span_seconds)
    with KafkaBroker(heap="1g") as broker:
        ensure_topics(broker.bootstrap, PARTITIONS)
        if not args.skip_single:
            started = time.monotonic()
            ledger = load_events(broker.bootstrap, encoded, envelopes=False)
            print(f"loaded {args.events:,} events as {ledger.records:,} records in {time.monotonic() - started:.1f} s",
                  flush=True)
            rows["worker_single"] = run(worker, broker.bootstrap, args.events, "bench-single", 900, ledger)
            rows["faust_noop"] = run([sys.executable, "bench/faust_noop_agent.py", "worker", "-l", "warn"],
                                     broker.bootstrap, args.events, "bench-noop", 900, ledger)
            rows["naive"] = run([sys.executable, "bench/naive_faust_agent.py", "worker", "-l", "warn"],
                                broker.bootstrap, args.events, "bench-naive", args.naive_seconds, ledger)
            recreate_topic(broker.bootstrap)
        envelope_events = args.envelope_events or max(args.events, 1_000_000)
        if envelope_events != args.events:
            encoded = generate(envelope_events, args.keys, args.span_seconds * envelope_events / args.events)
        started = time.monotonic()
        ledger = load_events(broker.bootstrap, encoded, envelopes=True)
        envelope_records = ledger.records
        print(f"loaded {envelope_events:,} events as {envelope_records:,} envelopes in {time.monotonic() - started:.1f} s",
              flush=True)
        rows["worker_envelopes"] = run(worker, broker.bootstrap, envelope_events, "bench-envelopes", 900, ledger)
    noop_eps = rows.get("faust_noop", {}).get("events_per_s", 0.0)
    figures = {
        "bench": "worker",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} cpus, Python {platform.python_version()}",
        "events": args.events, "keys": args.keys, "span_seconds": args.span_seconds, "partitions": PARTITIONS,
        "envelope_events": envelope_events,
        "mean_envelope_events": round(envelope_events / envelope_records, 1),
        **{f"{name}_eps": round(row["events_per_s"]) for name, row in rows.items()},
        **{f"{name}_cpu_us_per_event": round(row.get("cpu_us_per_event", 0.0), 2) for name, row in rows.items()},
        **{f"{name}_peak_rss_mb": round(row["rss_mb"]) for name, row in rows.items()},
        **{f"{name}_mean_batch_events": _mean_batch(row["progress"]) for name, row in rows.items()
           if name.startswith("worker")},
        "envelopes_to_noop_ratio": round(rows["worker_envelopes"]["events_per_s"] / noop_eps, 2) if noop_eps else None,
    }
    print(f"\n{datetime.now(UTC):%Y-%m-%d} on {platform.node()} ({os.cpu_count()} cores), "
          f"{args.events:,} events, {args.keys:,} keys over {args.span_seconds:,.0f} s of event time, "
          f"{PARTITIONS} partitions, chDB sink\n")
    print("| agent | events counted | events/s | CPU µs/event | CPU cores busy | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    labels = {"worker_envelopes": "keytrail worker, 500-event envelopes", "worker_single": "keytrail worker, single events",
              "faust_noop": "Faust no-op agent, single events (ceiling)", "naive": "naive one-at-a-time agent"}
    for name, row in rows.items():
        print(f"| {labels[name]} | {row['events']:,} | {row['events_per_s']:,.0f} | {row.get('cpu_us_per_event', 0):.1f} "
              f"| {row['cpu_share']:.2f} | {row['rss_mb']:.0f} |")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
