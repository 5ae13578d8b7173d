"""CPU per event of each stage of the worker's hot path, in process (no Kafka): where the time goes.

Envelopes of the bench_worker workload -> decode -> secret scrub -> core with the default
detectors -> chDB sink -> state overlay commit, in batches like the worker's. CPU is
`time.process_time()` (all threads, chDB's included) per stage, divided by the events.

    .venv/bin/python bench/bench_worker_stages.py --events 400000 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_worker import PARTITIONS, generate  # noqa: E402

from keytrail.schemas.batch_codec import decode_batch  # noqa: E402
from keytrail.schemas.envelope import MAX_ENVELOPE_EVENTS, encode_envelope  # noqa: E402
from keytrail.schemas.partitioning import partition_for  # noqa: E402
from keytrail.schemas.secrets import scrub_events  # noqa: E402
from keytrail.sql.backends import open_clickhouse  # noqa: E402
from keytrail.sql.migrate import migrate  # noqa: E402
from keytrail.stream_processors.core.aggregate import UsageAggregator  # noqa: E402
from keytrail.stream_processors.detectors import default_detectors  # noqa: E402
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink  # noqa: E402
from keytrail.stream_processors.state_stores import SerializedStateOverlay  # noqa: E402


def envelopes(events: int, keys: int, span_s: float) -> list[tuple[bytes, int, int]]:
    """(payload, partition, offset) records of up to 500 events, grouped per partition like the SDK."""
    pending: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    records: list[tuple[bytes, int, int]] = []
    for key, value in generate(events, keys, span_s):
        partition = partition_for(key, PARTITIONS)
        pending[partition].append(value)
        if len(pending[partition]) >= MAX_ENVELOPE_EVENTS:
            records.append((encode_envelope(pending[partition]), partition, len(records)))
            pending[partition] = []
    records += [(encode_envelope(items), p, len(records) + i) for i, (p, items) in enumerate(pending.items()) if items]
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--span-seconds", type=float, default=None,
                        help="event-time span (default: bench_worker's sparse density, 150k events per 2 h)")
    parser.add_argument("--batch-events", type=int, default=200_000, help="events per batch (the worker's default)")
    parser.add_argument("--json", action="store_true", help="print one final JSON object of the figures")
    args = parser.parse_args()
    span = args.span_seconds or 7200 * args.events / 150_000
    records = envelopes(args.events, args.keys, span)
    backend = open_clickhouse(f"chdb://{tempfile.mkdtemp(prefix='keytrail-stages-')}/chdb")
    migrate(backend)
    sink = ClickHouseSink(backend)
    aggregator = UsageAggregator(300, default_detectors())
    table: dict[bytes, bytes] = {}
    decoded_states: dict = {}
    seconds: dict[str, float] = {}

    def spent(stage: str, since: float) -> float:
        now = time.process_time()
        seconds[stage] = seconds.get(stage, 0.0) + now - since
        return now

    per_batch = max(1, args.batch_events // MAX_ENVELOPE_EVENTS)
    for start in range(0, len(records), per_batch):
        mark = time.process_time()
        decoded = decode_batch(records[start:start + per_batch])
        mark = spent("decode", mark)
        scrubbed = scrub_events(decoded.events)
        mark = spent("scrub", mark)
        overlay = SerializedStateOverlay(table, decoded_states, 50_000)
        result = aggregator.process(scrubbed.events, overlay, decoded.positions)
        mark = spent("core", mark)
        sink.write_batch(result)
        mark = spent("sink", mark)
        overlay.commit()
        spent("state", mark)
    per_event = {f"{stage}_us": round(value / args.events * 1e6, 2) for stage, value in seconds.items()}
    figures = {"bench": "worker_stages", "events": args.events, "keys": args.keys, "span_seconds": span,
               **per_event, "total_us": round(sum(seconds.values()) / args.events * 1e6, 2)}
    if args.json:
        print(json.dumps(figures))
    else:
        print("  ".join(f"{name} {value}" for name, value in figures.items()))


if __name__ == "__main__":
    main()
