"""Freshness of `last_used_at`: how long after an event is sent the key store shows it, at a steady load.

Starts a throwaway Kafka broker and a throwaway PostgreSQL (the test infrastructure's), creates K keys
in the key store, starts `keytrail worker` (chDB ClickHouse in a temp dir) and `keytrail projector`
(Postgres key store) as subprocesses, warms them up (one event per key, waits until every key's
`last_used_at` shows it), then produces R events/s for D seconds with the producers' librdkafka
settings (murmur2_random, key = key id), each event's `occurred_at` = its wall-clock send time (UTC ms).

Meanwhile a thread of this process polls the key store (one SELECT of id, last_used_at for all keys,
every --poll-ms). An event's freshness = the end of the first poll whose row for its key has
`last_used_at >= occurred_at`, minus the event's send time; so the resolution is one poll interval
plus one poll's duration, and the numbers are upper bounds by up to that much. After the sending
stops the poller keeps going (up to --drain-seconds) until every key shows its last event; events
never covered by then are counted as never observed.

    .venv/bin/python bench/bench_freshness.py --keys 500 --rate 500 --seconds 60

CPU is user+system seconds of the worker and projector processes during the sending window, divided
by its length (1.00 = one core busy). The bench itself, Kafka and Postgres run on the same machine.
"""

from __future__ import annotations

import argparse
import bisect
import os
import platform
import random
import shlex
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from confluent_kafka import Producer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keytrail.keystore.store import KeyStore  # noqa: E402
from keytrail.producers.kafka_emitter import producer_config  # noqa: E402
from keytrail.schemas.codec import encode_usage_event  # noqa: E402
from keytrail.schemas.topics import Topics  # noqa: E402
from keytrail.stream_processors.topics_admin import ensure_topics  # noqa: E402
from tests.e2e.pipeline_processes import KeytrailProcess  # noqa: E402
from tests.factories import usage_event  # noqa: E402
from tests.infra.kafka import KafkaBroker  # noqa: E402
from tests.infra.postgres import PostgresServer, libpq_dsn  # noqa: E402

SECRET = "bench-freshness-secret-at-least-16-bytes"
PROJECT = "proj_bench"
ROUTES = ("/v1/orders/{order_id}", "/v1/orders", "/v1/customers/{customer_id}", "/v1/invoices")
POLL_SQL = "SELECT id, (extract(epoch FROM last_used_at) * 1000)::bigint FROM api_keys WHERE project_id = %s"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Poller:
    """Polls last_used_at of every key; keeps, per key, each new value with the wall time it was first seen."""

    dsn: str
    interval_s: float
    key_index: dict[str, int]
    seen: list[list[tuple[int, float]]] = field(default_factory=list)
    """Per key index: (last_used_ms, wall time of the end of the poll that first showed it), in order."""
    polls: int = 0
    poll_seconds: float = 0.0
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.seen = [[] for _ in self.key_index]
        self._latest = [-1] * len(self.key_index)
        self._thread = threading.Thread(target=self._run, name="last-used-poller", daemon=True)

    def start(self) -> Poller:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self._thread.join(10)

    def latest(self, index: int) -> int:
        return self._latest[index]

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                started = time.time()
                try:
                    rows = conn.execute(POLL_SQL, (PROJECT,)).fetchall()
                except psycopg.Error:
                    self.errors += 1
                    time.sleep(self.interval_s)
                    continue
                ended = time.time()
                self.polls += 1
                self.poll_seconds += ended - started
                latest, seen, key_index = self._latest, self.seen, self.key_index
                for key_id, used_ms in rows:
                    index = key_index.get(key_id)
                    if index is None or used_ms is None or used_ms <= latest[index]:
                        continue
                    latest[index] = used_ms
                    seen[index].append((used_ms, ended))
                self.stop.wait(max(0.0, self.interval_s - (time.time() - started)))


def send_event(producer: Producer, key_id: str, rng: random.Random) -> tuple[int, float]:
    """Produce one event for `key_id` stamped with the current wall time; (occurred_at ms, send time)."""
    sent_at = time.time()
    occurred_ms = int(sent_at * 1000)
    event = usage_event(
        key_id, at=datetime.fromtimestamp(occurred_ms / 1000, UTC), project_id=PROJECT,
        client_ip=f"10.{hash(key_id) % 200}.0.{rng.randrange(1, 4)}", route=ROUTES[rng.randrange(len(ROUTES))],
        event_id=uuid.UUID(int=rng.getrandbits(128), version=4), request_id=f"req-{rng.getrandbits(48):x}",
    )
    producer.produce(Topics.USAGE.value, key=key_id.encode(), value=encode_usage_event(event))
    return occurred_ms, sent_at


def wait_for(condition, timeout: float, what: str, processes: list[KeytrailProcess]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes:
            if not process.alive():
                raise RuntimeError(f"{process.command} exited while waiting for {what}:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.command}\n{p.log_tail(30)}" for p in processes)
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.2)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def run(args: argparse.Namespace) -> dict:
    rng = random.Random(7)
    workdir = Path(tempfile.mkdtemp(prefix="keytrail-bench-fresh-"))
    print(f"worker and projector logs in {workdir}", flush=True)
    result: dict = {}
    with KafkaBroker(heap="512m") as broker, PostgresServer() as pg:
        ensure_topics(broker.bootstrap, args.partitions)
        store_url = pg.create_database("keytrail_bench")
        store = KeyStore.open(store_url, SECRET.encode())
        try:
            started = time.monotonic()
            key_ids = [store.create_key(f"bench-{i}", PROJECT)[0].id for i in range(args.keys)]
            print(f"created {len(key_ids):,} keys in {time.monotonic() - started:.1f} s", flush=True)
        finally:
            store.close()
        key_index = {key_id: i for i, key_id in enumerate(key_ids)}
        app_id = f"keytrail-bench-fresh-{uuid.uuid4().hex[:8]}"
        env = {
            "KEYTRAIL_KAFKA_BOOTSTRAP": broker.bootstrap, "KEYTRAIL_CLICKHOUSE_URL": f"chdb://{workdir / 'chdb'}",
            "KEYTRAIL_KEYSTORE_URL": store_url, "KEYTRAIL_SECRET": SECRET, "KEYTRAIL_DATA_DIR": str(workdir),
            "KEYTRAIL_WORKER_APP_ID": app_id, "KEYTRAIL_PROJECTOR_GROUP_ID": f"{app_id}-projector",
            "KEYTRAIL_USAGE_PARTITIONS": str(args.partitions), "KEYTRAIL_LOG_LEVEL": "INFO",
            "PYTHONPATH": str(REPO),
        }
        worker = KeytrailProcess("worker", env, workdir / "worker.log")
        projector = KeytrailProcess("projector", env, workdir / "projector.log")
        # librdkafka's own log at errors only (a "coordinator load in progress" retry at start is normal)
        producer = Producer(producer_config(broker.bootstrap, overrides={"log_level": 3}))
        poller = Poller(libpq_dsn(store_url), args.poll_ms / 1000, key_index)
        try:
            worker.start()
            projector.start()
            poller.start()
            started = time.monotonic()
            warm = [send_event(producer, key_id, rng)[0] for key_id in key_ids]
            producer.flush(30)
            wait_for(lambda: all(poller.latest(i) >= warm[i] for i in range(len(key_ids))), args.startup_timeout,
                     "the warm-up event of every key in last_used_at", [worker, projector])
            print(f"worker and projector up, warm-up seen for every key after {time.monotonic() - started:.1f} s",
                  flush=True)
            time.sleep(2.0)  # let the warm-up's tail (commits, signals) settle

            total = int(args.rate * args.seconds)
            key_of = [rng.randrange(len(key_ids)) for _ in range(total)]
            occurred = [0] * total
            sent = [0.0] * total
            cpu_before = (cpu_seconds(worker.process.pid), cpu_seconds(projector.process.pid), own_cpu_seconds())
            t0 = time.monotonic()
            next_index = 0
            while next_index < total:
                due = min(total, int((time.monotonic() - t0) * args.rate) + 1)
                while next_index < due:
                    occurred[next_index], sent[next_index] = send_event(producer, key_ids[key_of[next_index]], rng)
                    next_index += 1
                producer.poll(0)
                time.sleep(max(0.0, min(0.005, t0 + next_index / args.rate - time.monotonic())))
            send_seconds = time.monotonic() - t0
            cpu_after = (cpu_seconds(worker.process.pid), cpu_seconds(projector.process.pid), own_cpu_seconds())
            undelivered = producer.flush(30)
            last_of_key: dict[int, int] = {}
            for index, key in enumerate(key_of):
                last_of_key[key] = occurred[index]
            drain_started = time.monotonic()
            try:
                wait_for(lambda: all(poller.latest(k) >= ms for k, ms in last_of_key.items()), args.drain_seconds,
                         "the last event of every key", [worker, projector])
            except RuntimeError as timeout:
                print(f"warning: {str(timeout).splitlines()[0]}", flush=True)
            drain_seconds = time.monotonic() - drain_started
        finally:
            poller.close()
            producer.flush(5)
            del producer  # before the broker goes away, or librdkafka logs every reconnect attempt
            projector.stop()
            worker.stop()
    progress = [line for line in (workdir / "worker.log").read_text(errors="replace").splitlines()
                if "worker progress" in line]
    projected = [line for line in (workdir / "projector.log").read_text(errors="replace").splitlines()
                 if "projector progress" in line]
    shutil.rmtree(workdir, ignore_errors=True)  # chDB data and logs (kept when the run fails, for a look)
    if progress:
        print(f"last worker progress line: {progress[-1].split('worker progress: ')[1]}")
    if projected:
        print(f"last projector progress line: {projected[-1].split('projector progress: ')[1]}")

    freshness: list[float] = []
    never = 0
    seen_ms = [[ms for ms, _ in per_key] for per_key in poller.seen]
    for index in range(total):
        key = key_of[index]
        position = bisect.bisect_left(seen_ms[key], occurred[index])
        if position == len(seen_ms[key]):
            never += 1
        else:
            freshness.append(poller.seen[key][position][1] - sent[index])
    freshness.sort()
    result.update(
        events=total, observed=len(freshness), never=never, undelivered=undelivered,
        send_rate=total / send_seconds, send_seconds=send_seconds, drain_seconds=drain_seconds,
        p50=percentile(freshness, 50), p90=percentile(freshness, 90), p99=percentile(freshness, 99),
        max=freshness[-1] if freshness else float("nan"),
        worker_cpu=(cpu_after[0] - cpu_before[0]) / send_seconds,
        projector_cpu=(cpu_after[1] - cpu_before[1]) / send_seconds,
        bench_cpu=(cpu_after[2] - cpu_before[2]) / send_seconds,
        polls=poller.polls, mean_poll_ms=1000 * poller.poll_seconds / max(poller.polls, 1), poll_errors=poller.errors,
    )
    return result


def settings_line() -> str:
    """The worker's batch settings as the subprocess sees them (defaults or the environment)."""
    from keytrail.settings import Settings

    settings = Settings()
    return f"{settings.worker_batch_size} / {settings.worker_batch_seconds} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=500, help="keys in the key store, each event picks one uniformly")
    parser.add_argument("--rate", type=float, default=500.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send")
    parser.add_argument("--poll-ms", type=float, default=50.0, help="key store poll interval (the resolution)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of keytrail.usage.v1")
    parser.add_argument("--startup-timeout", type=float, default=240.0)
    parser.add_argument("--drain-seconds", type=float, default=60.0)
    args = parser.parse_args()
    r = run(args)
    ms = 1000.0
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} cores); "
          f"{args.keys:,} keys, {args.rate:,.0f} events/s for {args.seconds:,.0f} s (achieved {r['send_rate']:,.0f}/s), "
          f"{args.partitions} partitions, worker batch {settings_line()}, projector defaults, "
          f"Postgres key store, chDB sink; poll every {args.poll_ms:.0f} ms ({r['polls']:,} polls, "
          f"mean {r['mean_poll_ms']:.1f} ms each, {r['poll_errors']} failed)")
    print(f"command: {shlex.join(sys.orig_argv)}\n")
    print("| events | p50 ms | p90 ms | p99 ms | max ms | never observed | resolution | worker CPU | projector CPU |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {r['events']:,} | {r['p50'] * ms:,.0f} | {r['p90'] * ms:,.0f} | {r['p99'] * ms:,.0f} | "
          f"{r['max'] * ms:,.0f} | {r['never']:,} | {args.poll_ms:.0f} ms | {r['worker_cpu']:.2f} | "
          f"{r['projector_cpu']:.2f} |")
    print(f"\n(bench process CPU {r['bench_cpu']:.2f}; producer left {r['undelivered']} undelivered; "
          f"drain took {r['drain_seconds']:.1f} s)")


if __name__ == "__main__":
    main()
