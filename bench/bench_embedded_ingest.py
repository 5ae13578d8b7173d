"""Embedded ingest, end to end: `keytrail ingest --direct FILE` beside a plain-Python floor, same file, same run.

Generates a JSON Lines file with the realistic generator (producers/generator.py), then
1. the floor: orjson-decode each line, dedupe by event_id, count per (key, minute), last used per
   key -- no validation, no storage: what the simplest Python pass over the file costs here;
2. the product: `keytrail ingest --direct FILE` in a fresh data directory, as a subprocess
   (wall clock of the whole command: start-up, decode, core with detectors, chDB, key store).
Speed is stated as events/s and as the ratio product / floor (the machine's noise cancels).

    .venv/bin/python bench/bench_embedded_ingest.py --events 800000 --keys 120 --days 14 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keytrail.producers.generator import UsageGenerator, wire_json_lines  # noqa: E402


def write_file(path: Path, events: int, keys: int, days: int) -> int:
    count = 0
    with path.open("wb") as handle:
        for line in wire_json_lines(UsageGenerator(key_count=keys, days=days, incidents=True).events(events)):
            raw = line if isinstance(line, bytes) else line.encode()
            handle.write(raw.rstrip(b"\n") + b"\n")
            count += 1
    return count


def plain_python_floor(path: Path) -> tuple[float, int]:
    """Seconds for the simplest pass (decode, dedupe, count per key-minute, last used); events seen."""
    started = time.perf_counter()
    seen: set[str] = set()
    per_minute: Counter[tuple[str, str]] = Counter()
    last_used: dict[str, str] = {}
    loads = orjson.loads
    with path.open("rb") as handle:
        for line in handle:
            event = loads(line)
            event_id = event["event_id"]
            if event_id in seen:
                continue
            seen.add(event_id)
            key_id, at = event["key_id"], event["occurred_at"]
            per_minute[(key_id, at[:16])] += 1
            if at > last_used.get(key_id, ""):
                last_used[key_id] = at
    return time.perf_counter() - started, len(seen)


def run_ingest(python: Path, path: Path, data_dir: Path) -> tuple[float, float, str]:
    """Wall clock seconds and peak RSS (MB) of `keytrail ingest --direct`, and its last output line."""
    env = {**os.environ, "KEYTRAIL_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([str(python), "-c", "from keytrail.command import main; main()", "ingest", "--direct", str(path)],
                          env=env, capture_output=True, text=True, timeout=3600, check=False)
    seconds = time.perf_counter() - started
    rss_mb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
    if done.returncode != 0:
        raise SystemExit(f"ingest failed ({done.returncode}): {done.stderr.strip()[-400:] or done.stdout[-400:]}")
    return seconds, rss_mb, done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=800_000)
    parser.add_argument("--keys", type=int, default=120)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--python", type=Path, default=Path(sys.executable),
                        help="the interpreter whose keytrail is measured (default: this one)")
    parser.add_argument("--baseline-python", type=Path, default=None,
                        help="also measure another checkout's keytrail (its venv's python) on the same file")
    parser.add_argument("--json", action="store_true", help="print one final JSON object of the figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keytrail-bench-") as tmp:
        path = Path(tmp) / "events.jsonl"
        events = write_file(path, args.events, args.keys, args.days)
        floor_s, distinct = plain_python_floor(path)
        ingest_s, rss_mb, summary = run_ingest(args.python, path, Path(tmp) / "data")
        figures: dict[str, object] = {
            "bench": "embedded_ingest",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
            "events": events,
            "distinct_events": distinct,
            "keys": args.keys,
            "days": args.days,
            "floor_eps": round(events / floor_s),
            "ingest_eps": round(events / ingest_s),
            "ingest_seconds": round(ingest_s, 2),
            "ratio_to_floor": round(floor_s / ingest_s, 3),
            "ingest_peak_rss_mb": round(rss_mb),
            "ingest_summary": summary,
        }
        if args.baseline_python is not None:
            base_s, base_rss, _ = run_ingest(args.baseline_python, path, Path(tmp) / "baseline")
            figures["baseline_eps"] = round(events / base_s)
            figures["baseline_ratio_to_floor"] = round(floor_s / base_s, 3)
            figures["baseline_peak_rss_mb"] = round(base_rss)
    for name, value in figures.items():
        print(f"{name:>26}: {value}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
