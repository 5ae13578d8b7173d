"""Embedded ingest throughput: wire JSON -> decode/validate -> core (with detectors) -> chDB -> key store.

The path `keytrail ingest FILE` and `POST /v1/events` take in the embedded default, without
HTTP. Events come from the realistic generator (producers/generator.py), pre-serialised.

    .venv/bin/python bench/bench_embedded_ingest.py --events 200000 --keys 500
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keytrail.console.embedded import EmbeddedPipeline  # noqa: E402
from keytrail.producers.generator import UsageGenerator, wire_json_lines  # noqa: E402
from keytrail.schemas.codec import decode_usage_event  # noqa: E402
from keytrail.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()
    lines = list(wire_json_lines(UsageGenerator(key_count=args.keys, days=7, incidents=True).events(args.events)))
    with tempfile.TemporaryDirectory(prefix="keytrail-bench-") as data_dir:
        pipeline = EmbeddedPipeline(Settings(data_dir=Path(data_dir), _env_file=None))
        decode_s = core_s = 0.0
        started = time.perf_counter()
        accepted = 0
        for start in range(0, len(lines), args.batch):
            t0 = time.perf_counter()
            events = [decode_usage_event(line) for line in lines[start : start + args.batch]]
            t1 = time.perf_counter()
            accepted += len(pipeline.ingest(events).accepted)
            decode_s += t1 - t0
            core_s += time.perf_counter() - t1
        elapsed = time.perf_counter() - started
        pipeline.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{datetime.now(UTC):%Y-%m-%d} on {platform.node()} ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}), "
          f"{args.events:,} generated events over 7 days, {args.keys:,} keys, batches of {args.batch:,}\n")
    print("| stage | seconds | events/s |")
    print("|---|---:|---:|")
    print(f"| decode + validate (msgspec fast path, pydantic for refusals) | {decode_s:.1f} | {len(lines) / decode_s:,.0f} |")
    print(f"| core + detectors + chDB sink + key store + alerts | {core_s:.1f} | {len(lines) / core_s:,.0f} |")
    print(f"| end to end | {elapsed:.1f} | {len(lines) / elapsed:,.0f} |")
    print(f"\naccepted {accepted:,}; peak RSS {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
