"""CPU per event of the worker's two guards (write scope, secret scrub), beside decode of the same
records in the same run (the reference a noisy machine needs).

Run: `PYTHONPATH=. .venv/bin/python bench/bench_stream_guards.py [--events N] [--keys K] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from keytrail.schemas.batch_codec import decode_batch
from keytrail.schemas.codec import encode_usage_event
from keytrail.schemas.secrets import scrub_events
from keytrail.stream_processors.write_scope import refuse_out_of_scope
from tests.factories import usage_event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one final JSON object of the figures")
    args = parser.parse_args()
    records = [
        (encode_usage_event(usage_event(f"key_{i % args.keys}", seconds=i * 0.1, event_id=uuid.uuid4(),
                                        project_id="proj_a")), 0, i)
        for i in range(args.events)
    ]
    owners = {f"key_{i}": "proj_a" for i in range(args.keys)}
    runs = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        batch = decode_batch(records)
        decoded = time.perf_counter()
        refuse_out_of_scope(batch, owners, lambda _project: False)
        scoped = time.perf_counter()
        scrub_events(batch.events)
        scrubbed = time.perf_counter()
        per_event = 1e6 / args.events
        runs.append({"decode_us": (decoded - started) * per_event, "scope_us": (scoped - decoded) * per_event,
                     "scrub_us": (scrubbed - scoped) * per_event})
        if not args.json:
            print("decode {decode_us:.2f} us/event  scope {scope_us:.2f}  scrub {scrub_us:.2f}".format(**runs[-1]))
    if args.json:
        print(json.dumps({"events": args.events, "keys": args.keys, "runs": runs}))


if __name__ == "__main__":
    main()
