"""Core cost with and without stream time (partition watermarks closing every key's minutes), same batches.

Same run, interleaved, best of N by CPU time: the reference (`process(batch, states)`) beside
`process(batch, states, stream=StreamTimes(lateness))`, so a noisy machine still gives a ratio.

    .venv/bin/python bench/bench_stream_time.py --keys 300 --days 3 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keytrail.stream_processors.core import UsageAggregator  # noqa: E402
from keytrail.stream_processors.core.stream_time import StreamTimes  # noqa: E402
from keytrail.stream_processors.detectors import default_detectors  # noqa: E402
from keytrail.stream_processors.state_stores import InMemoryStates  # noqa: E402
from tests.detectors.traffic import merged_days, random_population  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one final JSON object of the figures")
    args = parser.parse_args()
    population = random_population(args.keys, seed=3)
    events = [event for day in merged_days(population, args.days, seed=3) for event in day]
    batches = [events[i:i + args.batch] for i in range(0, len(events), args.batch)]

    def run(with_stream: bool) -> float:
        core = UsageAggregator(300, default_detectors())
        states, stream = InMemoryStates(), (StreamTimes(300) if with_stream else None)
        started = time.process_time()
        for batch in batches:
            core.process(batch, states, stream=stream)
        return time.process_time() - started

    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeat):
        for flag in (False, True):
            seconds[flag].append(run(flag))
    reference, with_stream = min(seconds[False]), min(seconds[True])
    figures = {"bench": "stream_time", "events": len(events), "keys": args.keys,
               "reference_eps": round(len(events) / reference), "stream_time_eps": round(len(events) / with_stream),
               "ratio_cpu": round(with_stream / reference, 3),
               "runs_s": {"reference": [round(s, 2) for s in seconds[False]],
                          "stream_time": [round(s, 2) for s in seconds[True]]}}
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name}: {value}")


if __name__ == "__main__":
    main()
