"""Off-hours detection (issue 18): recall on office-hours incidents, false signals per 1,000 key-days, cost.

    .venv/bin/python bench/bench_off_hours.py [--seeds 4] [--keys 10] [--population 60] [--days 44]
                                              [--reference PATH] [--json]

- **Recall**: the incidents of `tests/detectors/test_off_hours.py` (office-hours keys from the
  project's traffic generator, used at night or on a Sunday at most 7 days after their first
  request), `--seeds` × `--keys` of them.
- **False signals** of `unusual_hour` on normal traffic: `traffic.random_population` (varied habits)
  and the quiet / office-hours population of `test_false_alerts.py`, `--days` days; counted after
  day 7 (this detector's learning: 5 active days) and after day 14 (the false-alert test's cut),
  per 1,000 key-days.
- **Cost**: CPU time of `UsageAggregator.process` with only this detector, minus the same with a
  no-op detector (the core's own cost of feeding detectors), per event, on the random population's
  events (best of 3).

With `--reference PATH` (a file holding another version of `unusual_hour.py`, e.g. `git show
main:stream_processors/detectors/unusual_hour.py > /tmp/unusual_hour_main.py`), every figure is also
measured for that version in the same run, for a ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from datetime import timedelta

import orjson

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from keytrail.schemas.signals import SignalKind  # noqa: E402
from keytrail.stream_processors.core import UsageAggregator  # noqa: E402
from keytrail.stream_processors.detectors import UnusualHourDetector  # noqa: E402
from keytrail.stream_processors.state_stores import InMemoryStates  # noqa: E402
from tests.detectors.test_false_alerts import quiet_and_office_hours_population  # noqa: E402
from tests.detectors.test_off_hours import caught, run_office_keys  # noqa: E402
from tests.detectors.traffic import SIM_START, merged_days, random_population  # noqa: E402


def load_reference(path: str):
    spec = importlib.util.spec_from_file_location("keytrail.stream_processors.detectors._unusual_hour_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.UnusualHourDetector


def recall(make, seeds: int, keys: int) -> tuple[int, int]:
    found = total = 0
    for seed in range(1, seeds + 1):
        incidents, signals, _ = run_office_keys(seed, keys, [make()])
        found += sum(caught(i, signals) for i in incidents)
        total += len(incidents)
    return found, total


def false_signals(make, population, days: int, seed: int, show: bool = False) -> dict:
    core, states, signals = UsageAggregator(detectors=[make()]), InMemoryStates(), []
    for events in merged_days(population, days, seed):
        for begin in range(0, len(events), 5000):
            signals.extend(core.process(events[begin : begin + 5000], states).signals)
    result = {}
    for cut in (7, 14):
        after = [s for s in signals if s.kind is SignalKind.UNUSUAL_HOUR and s.detected_at >= SIM_START + timedelta(days=cut)]
        key_days = len(population) * (days - cut)
        result[f"after_day_{cut}"] = {"signals": len(after), "key_days": key_days, "per_1000": 1000 * len(after) / key_days}
        if show and cut == 7:
            for signal in after:
                print(f"  [seed {seed}] {signal.severity.value} {signal.message}", file=sys.stderr)
    sizes = [len(orjson.dumps(state.detector_state.get("unusual_hour", {}))) for _, state in states.items()]
    result["state_bytes_max"] = max(sizes)
    return result


class NoOpDetector:
    """Does nothing: the core's own cost of feeding a detector (closed minutes, event lists) without one's work."""

    name = "noop"

    def observe(self, key_id, state, events, closed_minutes):
        return []


def cost(make, population, days: int, seed: int) -> tuple[float, int]:
    """CPU seconds of the detector per event (process with it minus process with a no-op detector), events."""
    batches = [events[b : b + 5000] for events in merged_days(population, days, seed) for b in range(0, len(events), 5000)]
    count = sum(len(b) for b in batches)
    timings = {}
    for label, detectors in (("none", lambda: [NoOpDetector()]), ("with", lambda: [make()])):
        best = None
        for _ in range(3):
            core, states = UsageAggregator(detectors=detectors()), InMemoryStates()
            started = time.process_time()
            for batch in batches:
                core.process(batch, states)
            elapsed = time.process_time() - started
            best = elapsed if best is None else min(best, elapsed)
        timings[label] = best
    return (timings["with"] - timings["none"]) / count, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--population", type=int, default=60)
    parser.add_argument("--population-seeds", default="202", help="comma-separated seeds of random_population")
    parser.add_argument("--show", action="store_true", help="print the false signals' messages")
    parser.add_argument("--days", type=int, default=44)
    parser.add_argument("--cost-days", type=int, default=10)
    parser.add_argument("--reference")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    versions = {"this": UnusualHourDetector}
    if args.reference:
        versions["reference"] = load_reference(args.reference)
    seeds = [int(seed) for seed in args.population_seeds.split(",")]
    populations = {
        "random_population": [(random_population(args.population, seed=seed), seed) for seed in seeds],
        "quiet_and_office_hours": [(quiet_and_office_hours_population(args.population, seed=118), 118)],
    }
    report: dict = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
                    "load_average": os.getloadavg(), "args": vars(args), "versions": {}}
    for name, make in versions.items():
        found, total = recall(make, args.seeds, args.keys)
        entry = {"recall": {"caught": found, "incidents": total, "share": found / total}}
        for label, runs in populations.items():
            parts = [false_signals(make, population, args.days, seed, args.show) for population, seed in runs]
            entry[label] = {
                cut: {"signals": sum(p[cut]["signals"] for p in parts), "key_days": sum(p[cut]["key_days"] for p in parts),
                      "per_1000": 1000 * sum(p[cut]["signals"] for p in parts) / sum(p[cut]["key_days"] for p in parts)}
                for cut in ("after_day_7", "after_day_14")
            } | {"state_bytes_max": max(p["state_bytes_max"] for p in parts), "seeds": [seed for _, seed in runs]}
        per_event, events = cost(make, populations["random_population"][0][0], args.cost_days, seeds[0])
        entry["cost"] = {"us_per_event": per_event * 1e6, "events": events}
        report["versions"][name] = entry
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    print(f"machine: {report['machine']}, load average {report['load_average']}")
    print("| version | recall | false / 1000 key-days after day 7 (random; quiet+office) | after day 14 | µs/event |")
    print("|---|---|---|---|---|")
    for name, entry in report["versions"].items():
        r, a, b = entry["recall"], entry["random_population"], entry["quiet_and_office_hours"]
        print(f"| {name} | {r['caught']}/{r['incidents']} | "
              f"{a['after_day_7']['per_1000']:.2f} ({a['after_day_7']['signals']} in {a['after_day_7']['key_days']}); "
              f"{b['after_day_7']['per_1000']:.2f} ({b['after_day_7']['signals']} in {b['after_day_7']['key_days']}) | "
              f"{a['after_day_14']['per_1000']:.2f} ({a['after_day_14']['signals']} in {a['after_day_14']['key_days']}); "
              f"{b['after_day_14']['per_1000']:.2f} ({b['after_day_14']['signals']} in {b['after_day_14']['key_days']}) | "
              f"{entry['cost']['us_per_event']:.2f} |")


if __name__ == "__main__":
    main()
