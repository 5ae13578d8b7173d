"""The secret prefilter and scrubbing: what checking an envelope or a batch costs.

    .venv/bin/python bench/bench_secrets.py

Cases, on 500-event envelopes of realistic events (browser user agents, UUID request ids):

- prefilter, clean envelope: `payload_may_hold_secret(raw)` over the whole JSON array, ns per byte;
  the same pattern with the standard library's `re` (the fallback without google-re2) for reference;
  and msgspec decoding the same bytes, the floor of the stream's per-envelope work.
- prefilter, dirty envelope: one secret in event 317 (found, so the stream scans each event).
- scrub_events, clean batch of 5000 decoded events: µs per event (one prefilter pass over the
  batch's text).
- scrub_event, one dirty event: µs.

Prints a markdown table. No target in DESIGN.md; the stream's budget is 10 µs per event.
"""

from __future__ import annotations

import platform
import re
import secrets
import string
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402
import orjson  # noqa: E402

from keytrail.schemas import secrets as scanner  # noqa: E402
from keytrail.schemas.usage_fast import FastUsageEvent  # noqa: E402

ALNUM = string.ascii_letters + string.digits
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"


def event(i: int) -> dict:
    return {"event_id": str(uuid.uuid4()), "schema_version": 1, "occurred_at": "2026-11-02T09:00:00.123Z",
            "key_id": "key_" + "".join(secrets.choice(ALNUM) for _ in range(20)), "project_id": "proj_payments",
            "service": "orders-api", "method": "GET", "route": "/v1/orders/{order_id}/items", "status": 200,
            "outcome": "ok", "latency_ms": 12.5, "request_bytes": 100, "response_bytes": 2000,
            "client_ip": f"10.1.{i % 250}.3", "user_agent": UA, "request_id": str(uuid.uuid4())}


def per_call(function, argument, seconds: float = 1.0) -> float:
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        function(argument)
        calls += 1
    return (time.perf_counter() - started) / calls


def main() -> None:
    events = [event(i) for i in range(500)]
    clean = orjson.dumps(events)
    dirty_events = [dict(e) for e in events]
    dirty_events[317]["user_agent"] = UA + " ghp_" + "".join(secrets.choice(ALNUM) for _ in range(36))
    dirty = orjson.dumps(dirty_events)
    assert not scanner.payload_may_hold_secret(clean) and scanner.payload_may_hold_secret(dirty)
    stdlib = re.compile(scanner.PREFILTER_PATTERN.encode())
    decoder = msgspec.json.Decoder(list[FastUsageEvent])
    decoded = decoder.decode(orjson.dumps([event(i) for i in range(5000)]))
    one_dirty = decoder.decode(dirty)[317]

    rows = [
        (f"prefilter ({scanner.PREFILTER_ENGINE}), clean envelope", per_call(scanner.payload_may_hold_secret, clean), len(clean)),
        ("prefilter (re, the fallback), clean envelope", per_call(stdlib.search, clean, 2.0), len(clean)),
        ("msgspec decode of the same envelope (floor)", per_call(decoder.decode, clean), len(clean)),
        (f"prefilter ({scanner.PREFILTER_ENGINE}), dirty envelope", per_call(scanner.payload_may_hold_secret, dirty), len(dirty)),
    ]
    print(f"python {platform.python_version()}, {platform.machine()}, envelope of 500 events = {len(clean)} bytes\n")
    print("| case | per call | ns/byte | µs/event |")
    print("|---|---:|---:|---:|")
    for name, seconds, size in rows:
        print(f"| {name} | {seconds * 1e6:.0f} µs | {seconds * 1e9 / size:.2f} | {seconds * 1e6 / 500:.2f} |")
    batch = per_call(scanner.scrub_events, decoded, 2.0)
    print(f"| scrub_events, clean batch of 5000 decoded events | {batch * 1e3:.1f} ms | | {batch * 1e6 / 5000:.2f} |")
    single = per_call(scanner.scrub_event, one_dirty)
    print(f"| scrub_event, one dirty event | {single * 1e6:.0f} µs | | {single * 1e6:.1f} |")


if __name__ == "__main__":
    main()
