"""verify() latency and throughput: cached and uncached, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_verify.py --keys 100000 --calls 20000
    .venv/bin/python bench/bench_verify.py --postgres-url postgresql://postgres@127.0.0.1:5432/bench

Each backend gets `--keys` stored keys (bulk-inserted rows with real HMAC hashes, so the
`key_hash` index has a realistic size) plus a few hundred created through `create_key`, which
are the ones verified. Cases:

- cached: the verification cache is warm; no database round trip.
- uncached: the cache TTL is 0, so every call is one indexed lookup by keyed hash.
- typo: a key whose checksum is wrong; rejected before hashing or lookup.

Every call is timed on its own (perf_counter_ns) in one thread, so verifies/s is per core;
"client CPU µs/verify" is this process's CPU time per call (process_time), which stays
meaningful on a busy machine (for uncached Postgres it excludes the server's own CPU).
Without `--postgres-url` a throwaway PostgreSQL is started from Debian's binaries (via
`tests/infra/postgres.py`); `--skip-postgres` measures SQLite only. Prints a markdown table.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert

from keytrail.keystore import KeyStore
from keytrail.keystore.hashing import KeyHasher
from keytrail.keystore.key_format import generate_key, parse_key
from keytrail.keystore.store import new_key_id
from keytrail.keystore.tables import api_keys

SECRET = b"benchmark-hashing-secret-0123456789"
VERIFIED_KEYS = 200
BULK_CHUNK = 5000


@dataclass
class Measurement:
    backend: str
    case: str
    calls: int
    p50_us: float
    p99_us: float
    mean_us: float
    cpu_us: float

    @property
    def per_second(self) -> float:
        return 1e6 / self.mean_us


def time_calls(call: Callable[[str], object], keys: list[str], calls: int) -> tuple[list[float], float]:
    """Per-call wall latencies in µs, cycling through `keys`, and this process's CPU µs per call."""
    samples = []
    clock = time.perf_counter_ns
    gc.disable()
    cpu_started = time.process_time_ns()
    try:
        for index in range(calls):
            key = keys[index % len(keys)]
            started = clock()
            call(key)
            samples.append((clock() - started) / 1000)
    finally:
        cpu_used = time.process_time_ns() - cpu_started
        gc.enable()
    return samples, cpu_used / 1000 / calls


def summarise(backend: str, case: str, timing: tuple[list[float], float]) -> Measurement:
    samples, cpu_us = timing
    ordered = sorted(samples)
    return Measurement(
        backend=backend,
        case=case,
        calls=len(samples),
        p50_us=ordered[len(ordered) // 2],
        p99_us=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        mean_us=statistics.fmean(samples),
        cpu_us=cpu_us,
    )


def fill(store: KeyStore, filler_keys: int) -> list[str]:
    """Bulk-insert `filler_keys` rows, then create the keys to verify; returns their secrets."""
    hasher = KeyHasher(SECRET)
    now = datetime.now(UTC)
    remaining = filler_keys
    with store.engine.begin() as connection:
        while remaining > 0:
            rows: list[dict[str, object]] = []
            for _ in range(min(BULK_CHUNK, remaining)):
                secret = generate_key("live")
                rows.append(
                    {
                        "id": new_key_id(),
                        "name": "filler",
                        "project_id": "bench-filler",
                        "owner": "",
                        "scopes": [],
                        "quota": None,
                        "ip_allowlist": [],
                        "status": "active",
                        "status_reason": "",
                        "created_at": now,
                        "updated_at": now,
                        "key_hash": hasher.hexdigest(secret),
                        "display_prefix": "kt_live_",
                        "hint": secret[-4:],
                    }
                )
            connection.execute(insert(api_keys), rows)
            remaining -= len(rows)
    return [
        store.create_key(f"bench {index}", "bench", scopes=["orders:read"], ip_allowlist=["10.0.0.0/8"])[1]
        for index in range(VERIFIED_KEYS)
    ]


def measure_backend(backend: str, url: str, filler_keys: int, calls: int) -> list[Measurement]:
    results = []
    with KeyStore.open(url, SECRET) as writer:
        secrets_ = fill(writer, filler_keys)
    typos = [key[:-1] + ("A" if key[-1] != "A" else "B") for key in secrets_]
    assert all(parse_key(typo) is None for typo in typos)

    with KeyStore.open(url, SECRET, migrate=False, cache_ttl_seconds=3600) as cached:
        for key in secrets_:
            assert cached.verify(key, scope="orders:read", client_ip="10.1.2.3").ok  # warm, and correct
        samples = time_calls(
            lambda key: cached.verify(key, scope="orders:read", client_ip="10.1.2.3"), secrets_, calls
        )
        results.append(summarise(backend, "cached", samples))
        results.append(summarise(backend, "typo (checksum)", time_calls(cached.verify, typos, calls)))

    with KeyStore.open(
        url, SECRET, migrate=False, cache_ttl_seconds=0, negative_cache_ttl_seconds=0
    ) as uncached:
        time_calls(uncached.verify, secrets_, min(calls, 500))  # warm the pool and statement cache
        timing = time_calls(
            lambda key: uncached.verify(key, scope="orders:read", client_ip="10.1.2.3"), secrets_, calls
        )
        results.append(summarise(backend, "uncached (1 indexed lookup)", timing))
    return results


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.infra.postgres import PostgresServer

    with PostgresServer() as server:
        yield server.create_database("bench_verify")


def markdown(results: list[Measurement]) -> str:
    lines = [
        "| backend | case | calls | p50 µs | p99 µs | verifies/s (1 thread) | client CPU µs/verify |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result.backend} | {result.case} | {result.calls} | {result.p50_us:.1f} | {result.p99_us:.1f} "
            f"| {result.per_second:,.0f} | {result.cpu_us:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000, help="stored keys per backend (index size)")
    parser.add_argument("--calls", type=int, default=20_000, help="timed verify() calls per case")
    parser.add_argument("--postgres-url", default=os.environ.get("KEYTRAIL_BENCH_POSTGRES_URL"))
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="keytrail-bench-") as directory:
        results += measure_backend(
            "SQLite (file, WAL)", f"sqlite:///{directory}/keys.db", args.keys, args.calls
        )
    if not args.skip_postgres:
        source = nullcontext(args.postgres_url) if args.postgres_url else throwaway_postgres()
        with source as url:
            results += measure_backend("PostgreSQL 15 (local, TCP)", url, args.keys, args.calls)

    load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    print(
        f"verify() on {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPU(s){load}, "
        f"{args.keys:,} stored keys, {datetime.now(UTC):%Y-%m-%d}\n"
    )
    print(markdown(results))


if __name__ == "__main__":
    main()
