"""The columnar core gives what the per-event core gave, for any input and any batching.

`tests/core/reference_core.py` is the per-event core as it stood before the columnar rewrite
(one Python step per event, reviewed and tested for releases). Random streams with late events,
repeated ids, re-deliveries and hot keys are folded by both, in random batch splits, and every
output must match: minute rows, last used, accepted/late/duplicate counts, signals, states.
"""

from __future__ import annotations

import random
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keytrail.schemas.usage import Outcome
from keytrail.stream_processors.core.aggregate import UsageAggregator
from keytrail.stream_processors.detectors import default_detectors
from tests.core.reference_core import UsageAggregator as ReferenceAggregator
from tests.factories import BASE_TIME, usage_event

OUTCOMES = list(Outcome)


def _stream(seed: int, size: int, keys: int) -> list:
    rng = random.Random(seed)
    events = []
    clock = 0.0
    for _ in range(size):
        clock += rng.expovariate(1 / 20)
        roll = rng.random()
        if events and roll < 0.08:
            events.append(rng.choice(events))  # re-sent: same event id
            continue
        moment = clock - (rng.uniform(0, 1500) if roll < 0.2 else 0)  # some arrive late, some very late
        events.append(usage_event(
            f"key_{rng.randrange(keys)}", at=BASE_TIME, seconds=max(moment, 0),
            event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            outcome=rng.choice(OUTCOMES), status=rng.choice([200, 200, 404, 500, 503]),
            client_ip=f"10.0.{rng.randrange(3)}.{rng.randrange(6)}",
            request_bytes=rng.randrange(0, 5000),
        ))
    return events


def _minutes(result) -> list:
    return [(m.key_id, m.project_id, m.minute_start_s, m.requests, m.errors, m.denials, m.outcomes,
             m.distinct_ips, m.request_bytes, m.response_bytes) for m in result.minutes]


def _fold(core, events, cuts, positions):
    states: dict = {}
    out = []
    start = 0
    for cut in [*cuts, len(events)]:
        piece = events[start:cut]
        pos = positions[start:cut] if positions is not None else None
        result = core.process(piece, states, pos)
        out.append((
            sorted(_minutes(result)),
            [(r.key_id, r.last_used_at, r.event_id, r.last_used_ip) for r in result.last_used],
            sorted(str(e.event_id) for e in result.accepted),
            sorted(str(e.event_id) for e in result.late),
            result.duplicates,
            [(s.key_id, s.kind, s.window_start, s.window_end) for s in result.signals],
        ))
        start = cut
    return out, {k: type(v).from_bytes(v.to_bytes()) for k, v in states.items()}  # as stored; dict order aside


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), st.integers(1, 400), st.integers(1, 12), st.lists(st.integers(0, 400), max_size=6),
       st.booleans(), st.booleans())
def test_same_outputs_as_the_per_event_core(seed, size, keys, cuts, with_positions, with_detectors):
    events = _stream(seed, size, keys)
    cuts = sorted({c for c in cuts if 0 < c < len(events)})
    # Positions: one partition, envelopes of a few events share an offset; replays re-deliver a tail.
    positions = [(0, i // 3) for i in range(len(events))] if with_positions else None
    if with_positions and len(events) > 10:
        replay_from = len(events) // 2
        events = events + events[replay_from:]
        positions = positions + positions[replay_from:]
    detectors = default_detectors if with_detectors else list
    new = _fold(UsageAggregator(300, detectors(), max_event_ids_per_key=50), events, cuts, positions)
    old = _fold(ReferenceAggregator(300, detectors(), max_event_ids_per_key=50), events, cuts, positions)
    assert new == old


def test_quiet_start_then_burst_in_one_minute():
    events = [usage_event("k", seconds=s) for s in (0, 1, 2)] + [usage_event("k", seconds=30 + i / 10) for i in range(50)]
    new = _fold(UsageAggregator(60), events, [3], None)
    old = _fold(ReferenceAggregator(60), events, [3], None)
    assert new == old
    assert sum(m[3] for m in new[0][1][0]) == 53


def test_a_late_event_beyond_lateness_is_late_in_both():
    events = [usage_event("k", seconds=3600), usage_event("k", seconds=0)]
    new = _fold(UsageAggregator(300), events, [], None)
    assert new == _fold(ReferenceAggregator(300), events, [], None)
    assert len(new[0][0][3]) == 1  # one late event
