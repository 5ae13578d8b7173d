"""CPU per event of the feedback applier at a batch start (no mark pending; marks pending for keys not
in the batch; marks due in the batch; the embedded applier, which never looks at the batch), beside the core with the default detectors on the same batches
in the same run (the reference a noisy machine needs).

Run: `PYTHONPATH=. .venv/bin/python bench/bench_feedback_apply.py [--events N] [--keys K] [--marks M] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid

from keytrail.stream_processors.core import UsageAggregator
from keytrail.stream_processors.detectors import default_detectors
from keytrail.stream_processors.detectors.feedback import DetectorFeedback
from keytrail.stream_processors.detectors.teaching import MarkedExpected
from keytrail.stream_processors.feedback_store import FeedbackApplier, InMemoryFeedbackSource
from keytrail.stream_processors.state_stores import InMemoryStates
from tests.factories import usage_event


def _mark(key_id: str, n: int) -> MarkedExpected:
    feedback = DetectorFeedback(key_id=key_id, project_id="proj_a", kind="new_network", signal_id=f"s{n}",
                                window_start_ms=0, window_end_ms=0, evidence={"ips": ["203.0.113.7"]})
    return MarkedExpected(f"fb{n}", 0, feedback)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--marks", type=int, default=100)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--json", action="store_true", help="print one final JSON object of the figures")
    args = parser.parse_args()
    events = [usage_event(f"key_{i % args.keys}", seconds=i * 0.05, event_id=uuid.uuid4(), project_id="proj_a",
                          client_ip=f"10.1.{i % 7}.{i % 200}") for i in range(args.events)]
    batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
    core = UsageAggregator(300, default_detectors())
    states = InMemoryStates()
    started = time.perf_counter()
    for batch in batches:
        core.process(batch, states)
    core_s = time.perf_counter() - started

    figures = {"events": args.events, "keys": args.keys, "marks": args.marks, "batch": args.batch,
               "core_us_per_event": core_s / args.events * 1e6, "load_average": os.getloadavg()[0]}
    cases = {
        "none_pending": [],
        "pending_other_keys": [_mark(f"absent_{n}", n) for n in range(args.marks)],
        "due_in_batch": [_mark(f"key_{n % args.keys}", n) for n in range(args.marks)],
    }
    cases["embedded_due"] = cases["due_in_batch"]
    for name, marks in cases.items():
        applier = FeedbackApplier(InMemoryFeedbackSource(marks), core.detectors, owns_every_key=name == "embedded_due")
        started = time.perf_counter()
        for batch in batches:
            applier.apply(batch, states)
        spent = time.perf_counter() - started
        figures[f"{name}_us_per_event"] = spent / args.events * 1e6
        figures[f"{name}_ratio_to_core"] = spent / core_s
        figures[f"{name}_taught"] = applier.taught
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name, value in figures.items():
            print(f"{name:32s} {value:.4f}" if isinstance(value, float) else f"{name:32s} {value}")


if __name__ == "__main__":
    main()
