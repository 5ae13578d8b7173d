"""The detectors' shortcuts give exactly what the plain computations give."""

import random
from datetime import timedelta

from keytrail.stream_processors.detectors import DormantKeyDetector, UnusualHourDetector
from keytrail.stream_processors.detectors.novelty import least_recent
from tests.detectors.scenarios import START, event, run


def test_least_recent_is_the_smallest_day_then_name():
    rng = random.Random(3)
    for _ in range(500):
        days = {f"n{rng.randrange(100)}": rng.randrange(5) for _ in range(rng.randint(1, 70))}
        assert least_recent(days) == min(days.items(), key=lambda item: (item[1], item[0]))[0]


def test_dormant_key_fires_whatever_the_batching():
    events = [event("key_d", START), event("key_d", START + timedelta(days=1)),
              event("key_d", START + timedelta(days=40)), event("key_d", START + timedelta(days=40, minutes=1))]
    for batch_size in (1, 2, 3, 4):
        signals, states = run([DormantKeyDetector()], events, batch_size=batch_size)
        assert [s.kind.value for s in signals] == ["dormant_key_active"]
        assert states.get("key_d").detector_state["dormant_key_active"]["l"] == int(
            (START + timedelta(days=40, minutes=1)).timestamp() * 1000
        )


def test_unusual_hour_counts_each_hour_once_whatever_the_batching():
    events = [event("key_h", START + timedelta(hours=h // 3, minutes=h % 3)) for h in range(60)]
    memories = []
    for batch_size in (1, 7, 60):
        _, states = run([UnusualHourDetector()], events, batch_size=batch_size)
        memories.append(states.get("key_h").detector_state["unusual_hour"])
    assert memories[0] == memories[1] == memories[2]
    assert memories[0]["n"] == 20
