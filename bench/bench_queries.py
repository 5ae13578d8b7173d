"""Canned security queries over generated events in chDB: ingest rows/s, p50/p95 per query, bytes per event.

    .venv/bin/python bench/bench_queries.py --events 10000000 --keys 1000 --days 30

Data path: `keytrail.producers.generator` events are turned into exactly the rows the ClickHouse sink
writes (`usage_events` rows, `key_usage_minute` full-value rows re-sent with a higher revision
after every worker batch of 5,000 events that touches the minute, `key_last_used` rows) and
inserted with JSONEachRow, the sink's format, in blocks of `--insert-rows` events. The stream
core is not in the loop (its throughput is measured by its own benchmark); "ingest rows/s" is
usage events per second of ClickHouse insert time. The refreshable rollup views are paused during
the bulk load and refreshed once after it (timed separately); in a stream they refresh every
minute. After that refresh the benchmark waits a minute and refreshes again, so queries run on
settled rollups, as they would on a live system whose current hour is computed on the fly.

Each canned query then runs `--runs` times (after one warm-up) with parameters a security
engineer would use: a busy key and a typical key, the last 24 hours and the last 7 days.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from keytrail.producers.generator import UsageGenerator, usage_event_row
from keytrail.schemas.usage import DENIAL_OUTCOMES
from keytrail.sql.backends import ChdbBackend
from keytrail.sql.migrate import migrate
from keytrail.sql.queries import run_query
from keytrail.sql.queries.rollups import ROLLUP_VIEWS, refresh_rollups
from keytrail.stream_processors.core.aggregate import MinuteUsage
from keytrail.stream_processors.sinks.clickhouse import minute_row

OUTCOMES = ("ok", "denied", "invalid", "expired", "revoked", "disabled", "rate_limited", "error")
DENIALS = frozenset(str(o) for o in DENIAL_OUTCOMES)
WORKER_BATCH = 5000


@dataclass
class _Minute:
    project_id: str
    requests: int = 0
    errors: int = 0
    denials: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    ips: set[str] = field(default_factory=set)
    request_bytes: int = 0
    response_bytes: int = 0


@dataclass
class LoadReport:
    events: int = 0
    minute_rows: int = 0
    last_used_rows: int = 0
    insert_seconds: float = 0.0
    total_seconds: float = 0.0


def _minute_start(occurred_at: str) -> int:
    """Epoch seconds of the minute of an ISO `YYYY-MM-DDTHH:MM:SS.mmmZ` timestamp."""
    return int(datetime.fromisoformat(occurred_at[:16] + ":00+00:00").timestamp())


def sink_rows(events: Iterator[dict[str, Any]], insert_rows: int) -> Iterator[tuple[list[bytes], list[bytes], list[bytes]]]:
    """Blocks of (usage_events, key_usage_minute, key_last_used) JSON rows, as the sink writes them."""
    open_minutes: dict[tuple[str, int], _Minute] = {}
    usage: list[bytes] = []
    minutes: list[bytes] = []
    last_used: list[bytes] = []
    touched: set[tuple[str, int]] = set()
    newest: dict[str, dict[str, Any]] = {}
    minute_cache: dict[str, int] = {}
    in_batch = 0
    dumps = orjson.dumps
    for event in events:
        usage.append(dumps(usage_event_row(event)))
        prefix = event["occurred_at"][:16]
        minute_s = minute_cache.get(prefix)
        if minute_s is None:
            minute_cache.clear()
            minute_s = minute_cache[prefix] = _minute_start(event["occurred_at"])
        slot = (event["key_id"], minute_s)
        agg = open_minutes.get(slot)
        if agg is None:
            agg = open_minutes[slot] = _Minute(event["project_id"])
        outcome = event["outcome"]
        agg.requests += 1
        if outcome == "error" or event["status"] >= 500:
            agg.errors += 1
        if outcome in DENIALS:
            agg.denials += 1
        agg.outcomes[outcome] += 1
        agg.ips.add(event["client_ip"])
        agg.request_bytes += event["request_bytes"]
        agg.response_bytes += event["response_bytes"]
        touched.add(slot)
        newest[event["key_id"]] = event
        in_batch += 1
        if in_batch == WORKER_BATCH:
            _emit_batch(open_minutes, touched, newest, minutes, last_used, minute_s)
            in_batch = 0
            if len(usage) >= insert_rows:
                yield usage, minutes, last_used
                usage, minutes, last_used = [], [], []
    _emit_batch(open_minutes, touched, newest, minutes, last_used, None)
    yield usage, minutes, last_used


def _emit_batch(
    open_minutes: dict[tuple[str, int], _Minute],
    touched: set[tuple[str, int]],
    newest: dict[str, dict[str, Any]],
    minutes: list[bytes],
    last_used: list[bytes],
    now_s: int | None,
) -> None:
    for key_id, minute_s in sorted(touched):
        agg = open_minutes[(key_id, minute_s)]
        usage = MinuteUsage(
            key_id=key_id, project_id=agg.project_id, minute_start_s=minute_s, requests=agg.requests,
            errors=agg.errors, denials=agg.denials, outcomes=dict(agg.outcomes), distinct_ips=len(agg.ips),
            request_bytes=agg.request_bytes, response_bytes=agg.response_bytes,
        )
        minutes.append(orjson.dumps(minute_row(usage)))
    touched.clear()
    for key_id, event in newest.items():
        last_used.append(orjson.dumps({
            "key_id": key_id, "project_id": event["project_id"],
            "last_used_at": event["occurred_at"][:-1].replace("T", " "), "last_used_ip": event["client_ip"],
            "route": event["route"], "service": event["service"], "event_id": event["event_id"],
        }))
    newest.clear()
    if now_s is not None:  # events arrive in time order: minutes older than the allowed lateness are closed
        for slot in [s for s in open_minutes if s[1] < now_s - 360]:
            del open_minutes[slot]


def load(backend: ChdbBackend, generator: UsageGenerator, events: int, insert_rows: int) -> LoadReport:
    """Generate `events` events and insert the sink's rows; returns counts and timings."""
    report = LoadReport()
    started = time.perf_counter()
    for usage, minutes, last_used in sink_rows(generator.events(events), insert_rows):
        t0 = time.perf_counter()
        backend.insert_json_rows("usage_events", b"\n".join(usage))
        backend.insert_json_rows("key_usage_minute", b"\n".join(minutes))
        backend.insert_json_rows("key_last_used", b"\n".join(last_used))
        report.insert_seconds += time.perf_counter() - t0
        report.events += len(usage)
        report.minute_rows += len(minutes)
        report.last_used_rows += len(last_used)
        print(f"  loaded {report.events:>11,} events ({time.perf_counter() - started:6.1f} s)", file=sys.stderr, flush=True)
    report.total_seconds = time.perf_counter() - started
    return report


def bench_cases(backend: ChdbBackend, generator: UsageGenerator) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, query name, parameters): what a security engineer would ask of this data."""
    end = generator.end
    assert end is not None
    day, week = end - timedelta(days=1), end - timedelta(days=7)
    ranked = backend.query(
        "SELECT key_id, project_id, count() AS n FROM usage_events WHERE occurred_at >= {since:DateTime64(3)} "
        "GROUP BY key_id, project_id ORDER BY n DESC, key_id",
        {"since": week},
    )
    busy, typical = ranked[0], ranked[len(ranked) // 2]
    project = busy["project_id"]
    keys = backend.query("SELECT DISTINCT key_id FROM key_last_used ORDER BY key_id")
    key_ids = [k["key_id"] for k in keys] + [f"key_unused_{i:04d}" for i in range(50)]
    created = [end - timedelta(days=90)] * len(key_ids)
    cases: list[tuple[str, str, dict[str, Any]]] = []
    for label, key in (("busy key", busy), ("typical key", typical)):
        k = {"key_id": key["key_id"]}
        cases += [
            (f"{label}, 7 d, 100 newest", "key_timeline", {**k, "since": week, "until": end, "limit": 100}),
            (f"{label}, 7 d", "key_ips", {**k, "since": week, "until": end}),
            (f"{label}, 7 d", "key_networks", {**k, "since": week, "until": end}),
            (f"{label}, 7 d", "key_routes", {**k, "since": week, "until": end}),
            (f"{label}, 7 d", "key_user_agents", {**k, "since": week, "until": end}),
            (f"{label}, 28 d", "key_hours_of_week", {**k, "since": end - timedelta(days=28), "until": end}),
            (f"{label}, 24 h vs 28 d", "key_baseline", {**k, "at": end, "baseline_days": 28}),
        ]
    cases += [
        ("all projects, 24 h", "top_keys", {"since": day, "until": end, "by": "requests", "limit": 20}),
        ("all projects, 7 d, by denials", "top_keys", {"since": week, "until": end, "by": "denials", "limit": 20}),
        ("one project, 7 d, by errors", "top_keys", {"since": week, "until": end, "by": "errors", "project": project}),
        ("all projects, 24 h", "project_usage", {"since": day, "until": end}),
        ("all projects, 7 d", "project_usage", {"since": week, "until": end}),
        ("24 h, >= 5 networks", "keys_many_networks", {"since": day, "until": end, "min_networks": 5}),
        ("7 d, >= 5 networks", "keys_many_networks", {"since": week, "until": end, "min_networks": 5}),
        ("24 h, >= 20 / 5 min", "denial_storms", {"since": day, "until": end, "min_denials": 20}),
        ("7 d, >= 20 / 5 min", "denial_storms", {"since": week, "until": end, "min_denials": 20}),
        ("24 h", "inactive_key_use", {"since": day, "until": end}),
        ("7 d", "inactive_key_use", {"since": week, "until": end}),
        ("busy key, 30 d", "key_audit", {"key_id": busy["key_id"], "since": end - timedelta(days=30), "until": end}),
        (f"{len(key_ids)} keys, 7 d", "idle_keys", {"key_ids": key_ids, "created_ats": created, "idle_days": 7, "at": end}),
        (f"{len(key_ids)} keys, 7 d", "never_used_keys", {"key_ids": key_ids, "created_ats": created, "idle_days": 7, "at": end}),
    ]
    return cases


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_benchmarks(backend: ChdbBackend, generator: UsageGenerator, runs: int) -> list[dict[str, Any]]:
    results = []
    for label, name, params in bench_cases(backend, generator):
        rows = run_query(backend, name, **params)
        timings, cpu = [], []
        for _ in range(runs):
            c0, t0 = time.process_time(), time.perf_counter()
            run_query(backend, name, **params)
            timings.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        results.append({
            "query": name, "case": label, "rows": len(rows),
            "p50_ms": statistics.median(timings), "p95_ms": percentile(timings, 0.95), "max_ms": max(timings),
            "min_ms": min(timings), "cpu_p50_ms": statistics.median(cpu),
        })
        print(f"  {name:<20} {label:<32} p50 {results[-1]['p50_ms']:7.1f} ms  p95 {results[-1]['p95_ms']:7.1f} ms",
              file=sys.stderr, flush=True)
    return results


def storage(backend: ChdbBackend) -> list[dict[str, Any]]:
    return backend.query(
        "SELECT table, sum(rows) AS rows, sum(bytes_on_disk) AS bytes, sum(data_uncompressed_bytes) AS raw "
        "FROM system.parts WHERE active AND database = currentDatabase() GROUP BY table ORDER BY bytes DESC"
    )


STDOUT = Path("-")


def summary(results: list[dict[str, Any]], events: int) -> dict[str, Any]:
    """The one object scripts compare runs by: `"<query> <case>"` → p50/p95 in ms, and the event count."""
    return {
        "queries": {f"{r['query']} {r['case']}": {"p50_ms": round(r["p50_ms"], 3), "p95_ms": round(r["p95_ms"], 3)}
                    for r in results},
        "events": events,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--insert-rows", type=int, default=500_000, help="usage events per INSERT")
    parser.add_argument("--path", type=Path, default=None, help="chDB directory (kept); default: a temporary one")
    parser.add_argument("--reuse", action="store_true", help="query an already loaded --path, skip generation")
    parser.add_argument("--json", nargs="?", type=Path, const=STDOUT, default=None,
                        help="print one final JSON object {queries: {'<query> <case>': {p50_ms, p95_ms}}, events} on "
                             "stdout (the Markdown report goes to stderr then); with a path, also write details there")
    parser.add_argument("--settle", type=float, default=65.0,
                        help="seconds to wait after the load before the second rollup refresh (default 65)")
    parser.add_argument("--optimize", action="store_true", help="OPTIMIZE … FINAL the raw tables before querying")
    args = parser.parse_args(argv)

    path = args.path or Path(tempfile.mkdtemp(prefix="keytrail-bench-"))
    if not args.reuse and path.exists():
        shutil.rmtree(path)
    end = datetime(2026, 11, 2, tzinfo=UTC)
    generator = UsageGenerator(key_count=args.keys, days=args.days, seed=args.seed, end=end)
    backend = ChdbBackend(path)
    try:
        migrate(backend)
        report = LoadReport()
        if not args.reuse:
            print(f"loading {args.events:,} events for {args.keys} keys over {args.days} days into {path}", file=sys.stderr)
            # A bulk load is not a stream: refresh the rollups once at the end, not every minute meanwhile.
            for view in ROLLUP_VIEWS:
                backend.command(f"SYSTEM STOP VIEW {view}")
            report = load(backend, generator, args.events, args.insert_rows)
            for view in ROLLUP_VIEWS:
                backend.command(f"SYSTEM START VIEW {view}")
        events = backend.query("SELECT count() AS n FROM usage_events")[0]["n"]
        t0 = time.perf_counter()
        refresh_rollups(backend)
        refresh_s = time.perf_counter() - t0
        # usage_hourly recomputes key-hours written within a minute of the last refresh; let that pass
        time.sleep(0 if args.reuse else args.settle)
        refresh_rollups(backend)
        optimize_s = 0.0
        if args.optimize:
            t0 = time.perf_counter()
            for table in ("usage_events", "key_usage_minute"):
                backend.command(f"OPTIMIZE TABLE {table} FINAL")
            optimize_s = time.perf_counter() - t0
        active_parts = backend.query(
            "SELECT table, count() AS parts FROM system.parts WHERE active AND database = currentDatabase() "
            "AND table IN ('usage_events', 'key_usage_minute') GROUP BY table ORDER BY table"
        )
        results = run_benchmarks(backend, generator, args.runs)
        parts = storage(backend)
    finally:
        backend.close()
        if args.path is None:
            shutil.rmtree(path, ignore_errors=True)

    usage_bytes = next((p["bytes"] for p in parts if p["table"] == "usage_events"), 0)
    all_bytes = sum(p["bytes"] for p in parts)
    out = sys.stderr if args.json is not None else sys.stdout
    say = functools.partial(print, file=out)  # with --json, stdout carries the JSON object alone
    say()
    say(f"## Canned queries over {events:,} events (chDB)")
    say()
    say(f"- date: {datetime.now(UTC):%Y-%m-%d}; machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, chDB {_chdb_version()}")
    say(f"- command: `.venv/bin/python bench/bench_queries.py {' '.join(argv if argv is not None else sys.argv[1:])}`")
    say(f"- data: {args.keys} keys, {args.days:g} days, seed {args.seed}; {args.runs} runs per query after a warm-up")
    if report.events:
        say(f"- ingest: {report.events:,} events + {report.minute_rows:,} minute rows + {report.last_used_rows:,} "
              f"last-used rows in {report.insert_seconds:.1f} s of inserts = **{report.events / report.insert_seconds:,.0f} "
              f"events/s** (rollup views included); with generation {report.events / report.total_seconds:,.0f} events/s")
    say(f"- rollups brought up to date after the load (first refresh covers everything): {refresh_s:.1f} s")
    if args.optimize:
        say(f"- OPTIMIZE … FINAL on usage_events and key_usage_minute before querying: {optimize_s:.1f} s")
    say("- active parts when querying: " + ", ".join(f"{p['table']} {p['parts']}" for p in active_parts))
    say(f"- load average during the query runs: {os.getloadavg()[0]:.1f} (1 min)")
    say(f"- on disk: usage_events **{usage_bytes / max(events, 1):.1f} bytes/event**; all tables "
          f"{all_bytes / max(events, 1):.1f} bytes/event")
    say()
    say("| query | case | rows | p50 ms | p95 ms | min ms | CPU p50 ms |")
    say("|---|---|--:|--:|--:|--:|--:|")
    for r in results:
        say(f"| `{r['query']}` | {r['case']} | {r['rows']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
              f"{r['min_ms']:.1f} | {r['cpu_p50_ms']:.1f} |")
    say()
    say("CPU ms: process CPU time (all chDB threads) per query; wall times include waiting for CPU on a shared machine.")
    say()
    say("| table | rows | bytes on disk | bytes/event |")
    say("|---|--:|--:|--:|")
    for p in parts:
        say(f"| {p['table']} | {p['rows']:,} | {p['bytes']:,} | {p['bytes'] / max(events, 1):.2f} |")
    if args.json is not None:
        if args.json != STDOUT:
            args.json.write_bytes(orjson.dumps({"results": results, "storage": parts, "load": report.__dict__},
                                               option=orjson.OPT_INDENT_2))
        print(orjson.dumps(summary(results, events)).decode(), flush=True)
    return 0


def _chdb_version() -> str:
    try:
        import chdb

        return str(chdb.__version__)
    except Exception:  # pragma: no cover - only for the report line
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
