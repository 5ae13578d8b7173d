"""Worker memory per 100k active keys: the per-key state the worker holds, measured in-process (no Kafka).

Builds the worker's core exactly as stream_processors/faust_app.py does —
`UsageAggregator(settings.allowed_lateness_seconds, default_detectors())` — and feeds it batches of
--batch decoded events (JSON bytes -> `decode_usage_event`, the worker's decode) through
`SerializedStateOverlay(table, decoded)` followed by `commit()`, as the worker's agent does per batch.
`table` stands in for the Faust table (the memory store keeps a dict of key-id bytes -> state bytes);
`decoded` is the worker's cache of decoded `KeyState`s (key id -> (state bytes, KeyState)), whose bytes
are the very objects the table holds.

"Active" here: each of --keys keys sent --events-per-key events spread evenly over the last --hours
hours of event time (default 12 over 3 h: one every 15 min, with jitter), so every key was used within
the last hour (its last event is in the final 15 minutes). Each key uses 1-3 IPs of its own /24 (5% of
events from another network), 1-3 routes of 20, GET/POST, 97% ok / 2% denied / 1% 5xx. Events are
interleaved across keys in roughly event-time order, as a live stream would be. With events 15 min apart,
each key's earlier minutes are closed by the time the next event comes, so a key ends with one open
minute (its dedupe memory holds that minute's event ids); heavier keys keep more open minutes and event
ids (~22 bytes of state per event of the last allowed_lateness + 1 minute), so they cost more.

Reported:
  (a) the serialized table: bytes of state payload (sum of len), the Python objects (dict + key/value
      bytes by sys.getsizeof), and what the allocator really holds for them (malloc_usable_size: orjson's
      bytes keep a buffer much larger than their length, see `allocated_size`);
  (b) the decoded cache: dict + key strings + tuples + KeyState object graphs (the bytes are shared with
      the table and counted there), by walking the objects with sys.getsizeof;
  total RSS growth of this process (VmRSS from /proc/self/status, after gc.collect(), before vs after),
  which also contains allocator overhead and fragmentation; optionally tracemalloc's traced growth.

    .venv/bin/python bench/bench_worker_memory.py --keys 100000
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import random
import shlex
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keytrail.keystore.key_format import BASE62_ALPHABET  # noqa: E402
from keytrail.schemas.codec import decode_usage_event  # noqa: E402
from keytrail.schemas.timestamps import format_utc_millis  # noqa: E402
from keytrail.schemas.usage_fast import FastUsageEvent  # noqa: E402
from keytrail.settings import Settings  # noqa: E402
from keytrail.stream_processors.core.aggregate import UsageAggregator  # noqa: E402
from keytrail.stream_processors.detectors import default_detectors  # noqa: E402
from keytrail.stream_processors.state_stores import DecodedStates, SerializedStateOverlay  # noqa: E402

ROUTES = tuple(f"/v1/{name}" + ("/{id}" if i % 2 else "") for i, name in enumerate(
    ["orders", "orders", "customers", "customers", "invoices", "invoices", "payments", "payments", "refunds",
     "refunds", "products", "products", "carts", "carts", "shipments", "shipments", "webhooks", "webhooks",
     "reports", "reports"]))
MB = 1024 * 1024


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def deep_size(roots: list[object], seen: set[int]) -> int:
    """sys.getsizeof of `roots` and everything they reference (containers, slots), each object once."""
    total = 0
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(obj, "__slots__") and not isinstance(obj, (str, bytes, int, float)):
            for cls in type(obj).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if hasattr(obj, name):
                        stack.append(getattr(obj, name))
    return total


def _malloc_usable_size():  # type: ignore[no-untyped-def]
    try:
        function = ctypes.CDLL(None).malloc_usable_size
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [ctypes.c_void_p], ctypes.c_size_t
    return function


MALLOC_USABLE_SIZE = _malloc_usable_size()


def allocated_size(obj: bytes) -> int:
    """Bytes the allocator really holds for a bytes object. orjson.dumps returns bytes whose buffer is
    larger than their length (about 8 KB for a ~1 KB state with orjson 3.x), which sys.getsizeof does not
    show. Objects over 512 bytes come from the C allocator (pymalloc hands those on), so glibc's
    malloc_usable_size can be asked about them; smaller ones live in pymalloc arenas: sys.getsizeof."""
    size = sys.getsizeof(obj)
    if MALLOC_USABLE_SIZE is None or size <= 512:
        return size
    return max(size, MALLOC_USABLE_SIZE(id(obj)))


def quantile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class Traffic:
    """Generates the batches of event payloads described in the module docstring, without holding them all."""

    def __init__(self, keys: int, events_per_key: int, hours: float, end: datetime, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.key_ids = ["key_" + "".join(rng.choices(BASE62_ALPHABET, k=20)) for _ in range(keys)]
        self.projects = [f"proj_{rng.randrange(50):02d}" for _ in range(keys)]
        self.ip_counts = [rng.randint(1, 3) for _ in range(keys)]
        self.route_sets = [rng.sample(range(len(ROUTES)), rng.randint(1, 3)) for _ in range(keys)]
        self.events_per_key = events_per_key
        self.start_ms = int((end - timedelta(hours=hours)).timestamp() * 1000)
        self.slot_ms = int(hours * 3_600_000 / events_per_key)
        self.order = list(range(keys))

    def payload(self, index: int, at_ms: int) -> bytes:
        rng = self.rng
        roll = rng.random()
        outcome, status = ("ok", 200) if roll < 0.97 else ("denied", 403) if roll < 0.99 else ("error", 503)
        if rng.random() < 0.05:
            ip = f"172.{rng.randrange(16, 32)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        else:
            ip = f"10.{index >> 16 & 255}.{index >> 8 & 255}.{(index & 255) % 250 + rng.randrange(self.ip_counts[index])}"
        return orjson.dumps({
            "event_id": f"{rng.getrandbits(128):032x}",
            "schema_version": 1,
            "occurred_at": format_utc_millis(datetime.fromtimestamp(at_ms / 1000, UTC)),
            "key_id": self.key_ids[index],
            "project_id": self.projects[index],
            "service": "orders-api",
            "method": "GET" if rng.random() < 0.8 else "POST",
            "route": ROUTES[rng.choice(self.route_sets[index])],
            "status": status,
            "outcome": outcome,
            "latency_ms": round(rng.uniform(2, 80), 1),
            "request_bytes": rng.randrange(100, 2000),
            "response_bytes": rng.randrange(200, 20000),
            "client_ip": ip,
            "user_agent": "bench-client/1.0",
            "request_id": f"req-{rng.getrandbits(40):010x}",
        })

    def batches(self, size: int):  # type: ignore[no-untyped-def]
        batch: list[bytes] = []
        for slot in range(self.events_per_key):
            slot_start = self.start_ms + slot * self.slot_ms
            self.rng.shuffle(self.order)
            # keys in a slot come in roughly time order: jitter grows with the position in the slot
            step = self.slot_ms / len(self.order)
            for position, index in enumerate(self.order):
                batch.append(self.payload(index, slot_start + int(position * step)))
                if len(batch) == size:
                    yield batch
                    batch = []
        if batch:
            yield batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--events-per-key", type=int, default=12)
    parser.add_argument("--hours", type=float, default=3.0, help="event-time span of each key's events")
    parser.add_argument("--batch", type=int, default=5_000, help="events per batch (the worker's default)")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations (about 2x slower)")
    args = parser.parse_args()

    settings = Settings()
    aggregator = UsageAggregator(settings.allowed_lateness_seconds, default_detectors())
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    traffic = Traffic(args.keys, args.events_per_key, args.hours, end)
    table: dict[bytes, bytes] = {}
    decoded: DecodedStates = {}
    # warm up imports, caches and the detectors on a throwaway key, so the baseline holds them
    warm_table: dict[bytes, bytes] = {}
    warm = SerializedStateOverlay(warm_table, {})
    aggregator.process([decode_usage_event(traffic.payload(0, traffic.start_ms))], warm)
    warm.commit()
    del warm, warm_table
    gc.collect()
    rss_before = rss_bytes()
    if args.tracemalloc:
        tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0

    started = time.perf_counter()
    events = fallbacks = batches = signals = 0
    for payloads in traffic.batches(args.batch):
        batch = [decode_usage_event(payload) for payload in payloads]
        fallbacks += sum(not isinstance(event, FastUsageEvent) for event in batch)
        overlay = SerializedStateOverlay(table, decoded)
        result = aggregator.process(batch, overlay)
        overlay.commit()
        events += len(batch)
        batches += 1
        signals += len(result.signals)
        del batch, result, overlay, payloads
    elapsed = time.perf_counter() - started
    gc.collect()
    rss_after = rss_bytes()
    traced_after, traced_peak = tracemalloc.get_traced_memory() if args.tracemalloc else (0, 0)
    if args.tracemalloc:
        tracemalloc.stop()

    keys = len(table)
    sizes = sorted(len(raw) for raw in table.values())
    payload_bytes = sum(sizes)
    table_objects = sys.getsizeof(table) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in table.items())
    table_allocated = sys.getsizeof(table) + sum(sys.getsizeof(k) + allocated_size(v) for k, v in table.items())
    seen = {id(raw) for raw in table.values()}  # the cache's bytes are the table's: counted there
    decoded_objects = sys.getsizeof(decoded) + deep_size([*decoded.keys(), *decoded.values()], seen)
    open_minutes = sorted(len(state.open_minutes) for _, state in decoded.values())
    assert keys == args.keys == len(decoded), (keys, args.keys, len(decoded))

    per_100k = 100_000 / keys / MB
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} cores), "
          f"Python {platform.python_version()}")
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"{keys:,} keys x {args.events_per_key} events over {args.hours:g} h of event time = {events:,} events "
          f"in {batches:,} batches of {args.batch:,}; {elapsed:.1f} s ({events / elapsed:,.0f} events/s); "
          f"{signals:,} signals; {fallbacks} events off the fast decode path; "
          f"open minutes per key p50 {quantile(open_minutes, 0.5)} max {open_minutes[-1]}")
    print(f"serialized state per key: p50 {quantile(sizes, 0.5):,} B, p99 {quantile(sizes, 0.99):,} B, "
          f"max {sizes[-1]:,} B, mean {payload_bytes / keys:,.0f} B")
    if args.tracemalloc:
        print(f"tracemalloc: traced growth {(traced_after - traced_before) / MB:,.1f} MB, peak {traced_peak / MB:,.1f} MB")
    print()
    print("| active keys | state bytes p50 / p99 / max | (a) table MB per 100k: payload / objects / allocated "
          "| (b) decoded cache MB per 100k | RSS growth MB per 100k |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {keys:,} | {quantile(sizes, 0.5):,} / {quantile(sizes, 0.99):,} / {sizes[-1]:,} B "
          f"| {payload_bytes * per_100k:,.1f} / {table_objects * per_100k:,.1f} / {table_allocated * per_100k:,.1f} "
          f"| {decoded_objects * per_100k:,.1f} | {(rss_after - rss_before) * per_100k:,.1f} |")
    print(f"\n(RSS {rss_before / MB:,.0f} MB -> {rss_after / MB:,.0f} MB; table allocated "
          f"{table_allocated / MB:,.1f} MB + decoded cache {decoded_objects / MB:,.1f} MB = "
          f"{(table_allocated + decoded_objects) / MB:,.1f} MB of live objects; payload = sum of len(bytes), "
          f"objects = sys.getsizeof of keys and values, allocated = what the allocator holds for them"
          f"{'' if MALLOC_USABLE_SIZE else ' (malloc_usable_size unavailable: same as objects)'})")


if __name__ == "__main__":
    main()
