"""Serialized per-key state: compact, backward readable, and the decoded-state cache never lies."""

from __future__ import annotations

import orjson

from keytrail.stream_processors.core.aggregate import UsageAggregator
from keytrail.stream_processors.core.state import KeyState, MinuteAggregate
from keytrail.stream_processors.state_stores import SerializedStateOverlay
from tests.factories import usage_event


def _state_with_ids(*ids: int) -> KeyState:
    return KeyState(project_id="p", watermark_ms=120_000,
                    open_minutes={60: MinuteAggregate(requests=len(ids), ips={"10.0.0.1"}, event_ids=set(ids))})


def test_state_round_trips_with_packed_event_ids():
    state = _state_with_ids(0, 1, 2**128 - 1, 0x1234_5678_9ABC_DEF0_1234_5678_9ABC_DEF0)
    assert KeyState.from_bytes(state.to_bytes()) == state
    state.source = (2, 77)
    assert KeyState.from_bytes(state.to_bytes()).source == (2, 77)


def test_states_written_with_hex_event_ids_are_still_read():
    state = _state_with_ids(7, 2**127)
    data = orjson.loads(state.to_bytes())
    data["m"]["60"][7] = [f"{i:032x}" for i in (7, 2**127)]
    assert KeyState.from_bytes(orjson.dumps(data)) == state


def test_packed_ids_take_about_a_third_less_room_than_hex():
    state = _state_with_ids(*range(2**100, 2**100 + 1000))
    data = orjson.loads(state.to_bytes())
    data["m"]["60"][7] = [f"{i:032x}" for i in state.open_minutes[60].event_ids]
    assert len(state.to_bytes()) < 0.7 * len(orjson.dumps(data))


def _run_batch(core, table, decoded, events):
    overlay = SerializedStateOverlay(table, decoded)
    result = core.process(events, overlay)
    overlay.commit()
    return overlay, result


def test_cached_states_are_reused_while_the_table_holds_what_was_written():
    core, table, decoded = UsageAggregator(300), {}, {}
    _run_batch(core, table, decoded, [usage_event("k1", seconds=1), usage_event("k2", seconds=1)])
    overlay, _ = _run_batch(core, table, decoded, [usage_event("k1", seconds=2), usage_event("k2", seconds=3)])
    assert overlay.decoded_from_table == 0
    assert KeyState.from_bytes(table[b"k1"]).total_requests == 2


def test_state_replaced_in_the_table_is_decoded_again_not_taken_from_the_cache():
    core, table, decoded = UsageAggregator(300), {}, {}
    _run_batch(core, table, decoded, [usage_event("k1", seconds=1)])
    elsewhere = {}  # e.g. the partition was processed by another worker meanwhile, then handed back
    _run_batch(core, elsewhere, None, [usage_event("k1", seconds=1), usage_event("k1", seconds=5),
                                       usage_event("k1", seconds=6)])
    table[b"k1"] = elsewhere[b"k1"]
    overlay, _ = _run_batch(core, table, decoded, [usage_event("k1", seconds=7)])
    assert overlay.decoded_from_table == 1
    assert KeyState.from_bytes(table[b"k1"]).total_requests == 4


def test_a_batch_that_never_commits_leaves_no_trace_in_the_cache():
    core, table, decoded = UsageAggregator(300), {}, {}
    same = usage_event("k1", seconds=1)
    _run_batch(core, table, decoded, [same])
    failed = SerializedStateOverlay(table, decoded)
    core.process([usage_event("k1", seconds=2)], failed)  # the sink fails: no commit
    overlay, result = _run_batch(core, table, decoded, [usage_event("k1", seconds=2), same])
    assert result.duplicates == 1
    assert KeyState.from_bytes(table[b"k1"]).total_requests == 2
    assert overlay.decoded_from_table == 1


def test_serialized_state_holds_no_more_memory_than_its_size():
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        import pytest

        pytest.skip("malloc_usable_size is glibc's")
    usable = ctypes.CDLL(None).malloc_usable_size
    usable.restype = ctypes.c_size_t
    state = _state_with_ids(*range(2**100, 2**100 + 40))  # ~1 KB, so allocated by malloc, not pymalloc
    raw = state.to_bytes()
    assert 700 < len(raw) < 4096
    assert usable(ctypes.c_void_p(id(raw))) < 2 * len(raw) + 64


def test_the_decoded_cache_keeps_only_the_most_recently_used_states():
    core, table, decoded = UsageAggregator(300), {}, {}
    for second, key in enumerate(["k1", "k2", "k3", "k1", "k4"]):
        overlay = SerializedStateOverlay(table, decoded, max_decoded=2)
        core.process([usage_event(key, seconds=second)], overlay)
        overlay.commit()
    assert list(decoded) == ["k1", "k4"]
    overlay = SerializedStateOverlay(table, decoded, max_decoded=2)
    core.process([usage_event("k2", seconds=9)], overlay)
    assert overlay.decoded_from_table == 1, "an evicted state is read back from the table"
    overlay.commit()
    assert KeyState.from_bytes(table[b"k2"]).total_requests == 2
